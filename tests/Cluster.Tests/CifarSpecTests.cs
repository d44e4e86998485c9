using System.Text.Json;
using Distill.Engine.Interop;
using Distill.Engine.Models;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// The CIFAR-10 specs at paper settings (specs/*-cifar10.yaml), run at CPU size: the same files
/// with only their lengths and batch sizes cut, on a small CIFAR-format dataset this test writes
/// (CIFAR cannot be fetched here), from a ResNet-34 teacher saved as a PyTorch state_dict.
/// </summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class CifarSpecTests : IDisposable
{
    private readonly string dir = Path.Combine(Path.GetTempPath(), $"cd-cifar-{Guid.NewGuid():N}");

    public CifarSpecTests()
    {
        Torch.Init();
        Directory.CreateDirectory(dir);
    }

    public void Dispose()
    {
        try { Directory.Delete(dir, true); } catch (IOException) { }
    }

    /// <summary>CIFAR-10's binary format: per image a label byte, then 1024 bytes each of red, green and blue.</summary>
    private string WriteCifar()
    {
        var data = Path.Combine(dir, "cifar-10-batches-bin");
        Directory.CreateDirectory(data);
        var rng = new Random(3);
        void Write(string name, int count)
        {
            var bytes = new byte[count * 3073];
            for (var i = 0; i < count; i++)
            {
                var label = (byte)(i % 10);
                bytes[i * 3073] = label;
                for (var p = 0; p < 3072; p++) bytes[i * 3073 + 1 + p] = (byte)(label * 20 + rng.Next(60));
            }
            File.WriteAllBytes(Path.Combine(data, name), bytes);
        }
        for (var b = 1; b <= 5; b++) Write($"data_batch_{b}.bin", 20);
        Write("test_batch.bin", 40);
        return data;
    }

    private static string Shrink(string text, params (string From, string To)[] cuts)
    {
        foreach (var (from, to) in cuts)
        {
            Assert.True(text.Contains(from), $"the spec no longer says '{from}'");
            text = text.Replace(from, to);
        }
        return text;
    }

    [Theory]
    [InlineData("dafl-cifar10.yaml")]
    [InlineData("deepinversion-cifar10.yaml")]
    [InlineData("adi-cifar10.yaml")]
    [InlineData("student-cifar10.yaml")]
    public void Should_run_the_paper_setting_cifar10_spec_at_cpu_size(string file)
    {
        var data = WriteCifar();
        var teacherFile = Path.Combine(dir, "cifar10-resnet34.pth");
        manual_seed(4);
        using (var teacher = ModelFactory.Create("resnet34", 3, 32, 10))
            TorchSaveWriter.Write(teacherFile, teacher.state_dict().Select(kv => RawTensor.From(kv.Key, kv.Value)).ToList());

        var text = File.ReadAllText(Path.Combine(Repo.Root(), "specs", file));
        text = Shrink(text, ("path: data/cifar-10-batches-bin", $"path: \"{data}\""), ("device: auto", "device: cpu"));
        if (text.Contains("teacher:")) text = Shrink(text, ("checkpoint: teachers/cifar10-resnet34.pth", $"checkpoint: \"{teacherFile}\""));
        text = file switch
        {
            "dafl-cifar10.yaml" => Shrink(text, ("steps: 240000", "steps: 4"), ("batch_size: 1024", "batch_size: 16"), ("eval_every: 120", "eval_every: 2"),
                ("milestones: [96000, 192000]", "milestones: [2, 3]"), ("sample_grid: 100", "sample_grid: 16")),
            "student-cifar10.yaml" => Shrink(text, ("epochs: 200, batch_size: 256", "steps: 6, batch_size: 16"), ("eval_every: 195", "eval_every: 3"),
                ("milestones: [23400, 29250, 35100]", "milestones: [2, 4, 5]")),
            _ => Shrink(text, ("rounds: 1000", "rounds: 2"), ("batch_size: 256", "batch_size: 8"), ("iterations: 2000", "iterations: 3"),
                ("student_steps: 50", "student_steps: 2"), ("student_batch: 256", "student_batch: 8"), ("sample_grid: 100", "sample_grid: 16")),
        };
        var spec = SpecParser.Parse(text, file);
        var result = new Runner(new RunnerOptions { RunsRoot = dir, RunId = "run", LogEvery = 1 }, TextWriter.Null).Run(spec);

        var run = Path.Combine(dir, "run");
        Assert.InRange(result.StudentAccuracy, 0, 100);
        Assert.True(File.Exists(Path.Combine(run, StudentExport.PyTorchFile)) && File.Exists(Path.Combine(run, StudentExport.SafetensorsFile)));
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "result.json")));
        Assert.Equal("resnet18", json.RootElement.GetProperty("student_arch").GetString());
        if (spec.Teacher is not null)
            Assert.Contains("teacher loaded from", File.ReadAllText(Path.Combine(run, "events.log")));
        // the exported student is the run's student, in PyTorch's names
        using var back = ModelFactory.Create("resnet18", 3, 32, 10);
        var report = StateDictLoader.Load(back, Path.Combine(run, StudentExport.PyTorchFile));
        Assert.Equal(122, report.Tensors);
    }
}
