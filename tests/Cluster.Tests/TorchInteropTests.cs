using System.Diagnostics;
using System.Text.Json;
using Distill.Engine.Data;
using Distill.Engine.Interop;
using Distill.Engine.Models;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// Against PyTorch itself (Debian's python3-torch, which scripts/test.sh installs; tools/torch_interop.py
/// is its side): every architecture's PyTorch state_dict loads here with the same logits; a
/// teacher trained by PyTorch gives the same logits and accuracy here; DAFL distils it and PyTorch
/// reads the exported student back with the accuracy result.json reports.
/// </summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class TorchInteropTests : IDisposable
{
    private const string Python = "/usr/bin/python3";
    private readonly string dir = Path.Combine(Path.GetTempPath(), $"cd-torch-interop-{Guid.NewGuid():N}");

    public TorchInteropTests()
    {
        Torch.Init();
        Directory.CreateDirectory(dir);
    }

    public void Dispose()
    {
        try { Directory.Delete(dir, true); } catch (IOException) { }
    }

    private static string PyTorch(params string[] args)
    {
        var psi = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Repo.Root() };
        psi.ArgumentList.Add(Path.Combine(Repo.Root(), "tools", "torch_interop.py"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception e) { throw new InvalidOperationException($"{Python} is missing: scripts/python-torch.sh installs Debian's python3-torch", e); }
        using (p)
        {
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(TimeSpan.FromMinutes(5))) { p.Kill(true); throw new TimeoutException("tools/torch_interop.py took over 5 minutes"); }
            Assert.True(p.ExitCode == 0, $"tools/torch_interop.py {string.Join(' ', args)} failed (exit {p.ExitCode}; scripts/python-torch.sh installs python3-torch):\n{stderr.Result}");
            return stdout.Result;
        }
    }

    private static float[] Logits(Classifier m, Tensor x)
    {
        m.eval();
        using var _ = no_grad();
        using var y = m.call(x);
        return y.flatten().data<float>().ToArray();
    }

    private static Tensor FixedInputs(long[] shape)
    {
        var n = shape.Aggregate(1L, (a, b) => a * b);
        var v = new float[n];
        for (var i = 0; i < n; i++) v[i] = (float)(1.5 * Math.Sin(0.37 * i + 0.1));
        return tensor(v, shape);
    }

    /// <summary>
    /// Within tol of PyTorch's float32 logits, relative to their scale where that exceeds 1: both
    /// sides compute in float32 with their own summation orders, so larger logits carry larger
    /// rounding (a random torchvision ResNet's reach ~20).
    /// </summary>
    private static void AssertClose(double[] expected, float[] actual, double tol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        var worst = expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max();
        var scale = Math.Max(1, expected.Max(Math.Abs));
        Assert.True(worst <= tol * scale, $"{what}: logits differ from PyTorch's by up to {worst:G3} (allowed {tol} x {scale:G3}, their largest magnitude)");
        Console.WriteLine($"{what}: max |logit difference| {worst:G3}, largest |logit| {expected.Max(Math.Abs):G3}");
    }

    [Fact]
    public void Should_load_every_architectures_pytorch_state_dict_with_pytorchs_logits()
    {
        PyTorch("models", dir);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "models.json")));
        var archs = new List<string>();
        var protocols = new SortedSet<int>();
        foreach (var m in doc.RootElement.GetProperty("models").EnumerateArray())
        {
            var arch = m.GetProperty("arch").GetString()!;
            archs.Add(arch);
            var shape = m.GetProperty("input").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            using var x = FixedInputs(shape);
            var files = m.GetProperty("files");
            var expected = m.GetProperty("logits").EnumerateArray().Select(e => e.GetDouble()).ToArray();
            // the order student.pth lists a student's tensors in is PyTorch's state_dict() order
            using (var saved = WeightFile.Open(Path.Combine(dir, files.GetProperty("state_dict").GetString()!)))
            using (var ours = ModelFactory.Create(arch, (int)shape[1], (int)shape[2], 10))
                Assert.Equal(saved.Entries.Select(e => e.Name),
                    StudentExport.InPyTorchOrder(ours.state_dict().Select(kv => new RawTensor(kv.Key, ScalarType.Float32, [], []))).Select(t => t.Name));
            foreach (var variant in files.EnumerateObject().Where(f => f.Value.ValueKind == JsonValueKind.String))
            {
                using var model = ModelFactory.Create(arch, (int)shape[1], (int)shape[2], 10);
                var report = StateDictLoader.Load(model, Path.Combine(dir, variant.Value.GetString()!));
                var want = variant.Name switch
                {
                    "fp16_checkpoint" => files.GetProperty("fp16_logits").EnumerateArray().Select(e => e.GetDouble()).ToArray(),
                    "bf16" => files.GetProperty("bf16_logits").EnumerateArray().Select(e => e.GetDouble()).ToArray(),
                    _ => expected,
                };
                AssertClose(want, Logits(model, x), 1e-5, $"{arch} ({variant.Name}: {report})");
                if (variant.Name == "fp16_checkpoint")
                {
                    Assert.Equal("state_dict", report.Key);
                    Assert.Contains("'module.' prefix removed", report.Renamed);
                    Assert.Contains("Float16 to Float32", report.Converted);
                }
                if (variant.Name == "legacy") Assert.Equal("PyTorch legacy", report.Format);
                if (variant.Name == "legacy") protocols.Add(files.GetProperty("legacy_protocol").GetInt32());
                if (variant.Name == "bf16") Assert.Contains("BFloat16 to Float32", report.Converted);
                if (variant.Name == "fp64") Assert.Contains("Float64 to Float32", report.Converted);
            }
        }
        Assert.Equal(ModelFactory.Architectures.Order(), archs.Order());
        // legacy files in every pickle protocol torch.save writes them with
        Assert.Equal([1, 2, 3, 4, 5], protocols);
    }

    [Fact]
    public void Should_distil_a_teacher_trained_by_pytorch_and_hand_the_student_back_with_the_same_accuracy()
    {
        var mnist = new DatasetCache(DatasetCache.DefaultRoot(), TextWriter.Null).Ensure("mnist");
        PyTorch("train-mnist", mnist, dir, "--steps", "300");
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "teacher.json")));
        var teacherFile = Path.Combine(dir, "teacher.pth");

        // the teacher here: PyTorch's logits on the first 64 test images, and its test accuracy
        using var data = Distill.Engine.Training.DataSplits.Load(new DataSpec { Name = "mnist" });
        using var teacher = ModelFactory.Create("lenet5", 1, 32, 10);
        StateDictLoader.Load(teacher, teacherFile);
        using (var first = data.TestX[..64])
            AssertClose(doc.RootElement.GetProperty("logits").EnumerateArray().Select(e => e.GetDouble()).ToArray(), Logits(teacher, first), 1e-5, "the PyTorch-trained teacher");
        var accuracy = Distill.Engine.Training.Evaluation.Accuracy(teacher, data.TestX, data.TestY, CPU, 500);
        Assert.InRange(accuracy - doc.RootElement.GetProperty("accuracy").GetDouble(), -0.01, 0.01);

        // DAFL from that file, the student exported, PyTorch's accuracy of it
        var spec = SpecParser.Parse($$$"""
            name: from-pytorch
            method: dafl
            seed: 5
            data: {name: mnist}
            teacher: {arch: lenet5, checkpoint: "{{{teacherFile}}}"}
            student: {arch: lenet5-half, train: {lr: 0.002}}
            dafl: {steps: 60, batch_size: 64, generator_width: 16, eval_every: 30, activation: code, entropy: code}
            """, "from-pytorch.yaml");
        var result = new Runner(new RunnerOptions { RunsRoot = dir, RunId = "run", LogEvery = 50 }, TextWriter.Null).Run(spec);
        Assert.InRange(result.TeacherAccuracy!.Value - accuracy, -0.001, 0.001);
        var runDir = Path.Combine(dir, "run");
        var onnx = Path.Combine(dir, "student.onnx");
        using var back = JsonDocument.Parse(PyTorch("evaluate", Path.Combine(runDir, StudentExport.PyTorchFile), "lenet5-half", mnist, "--onnx", onnx));
        Console.WriteLine($"teacher: PyTorch {doc.RootElement.GetProperty("accuracy").GetDouble():F2}%, here {accuracy:F2}%; " +
            $"DAFL student: result.json {result.StudentAccuracy:F2}%, PyTorch on student.pth {back.RootElement.GetProperty("accuracy").GetDouble():F2}%");
        Assert.InRange(back.RootElement.GetProperty("accuracy").GetDouble() - result.StudentAccuracy, -0.01, 0.01);
        Assert.True(new FileInfo(onnx).Length > 10_000, "torch.onnx.export wrote no model");
        using var fromSafetensors = JsonDocument.Parse(PyTorch("evaluate", Path.Combine(runDir, StudentExport.SafetensorsFile), "lenet5-half", mnist));
        Assert.InRange(fromSafetensors.RootElement.GetProperty("accuracy").GetDouble() - result.StudentAccuracy, -0.01, 0.01);
    }

    /// <summary>
    /// `evaluate RUN_DIR DATA_DIR` takes the student's architecture, dataset and image size from the
    /// run: an MLP on 28-pixel MNIST, and a 3-channel CIFAR ResNet on a small CIFAR-format file.
    /// </summary>
    [Fact]
    public void Should_hand_back_any_students_run_with_its_own_architecture_dataset_and_image_size()
    {
        var mnist = new DatasetCache(DatasetCache.DefaultRoot(), TextWriter.Null).Ensure("mnist");
        var cifar = Path.Combine(dir, "cifar-10-batches-bin");
        Directory.CreateDirectory(cifar);
        var rng = new Random(4);
        foreach (var (name, count) in new[] { ("data_batch_1.bin", 60), ("data_batch_2.bin", 20), ("data_batch_3.bin", 20), ("data_batch_4.bin", 20), ("data_batch_5.bin", 20), ("test_batch.bin", 50) })
        {
            var bytes = new byte[count * 3073];
            for (var i = 0; i < count; i++)
            {
                bytes[i * 3073] = (byte)(i % 10);
                for (var p = 0; p < 3072; p++) bytes[i * 3073 + 1 + p] = (byte)(i % 10 * 20 + rng.Next(60));
            }
            File.WriteAllBytes(Path.Combine(cifar, name), bytes);
        }
        foreach (var (id, arch, data, folder) in new[]
                 {
                     ("mlp", "hinton-400", "{name: mnist, image_size: 28, train_limit: 2000}", mnist),
                     ("resnet", "resnet8", $"{{name: cifar10, path: \"{cifar}\", augment: none}}", cifar),
                 })
        {
            var spec = SpecParser.Parse($"name: {id}\nmethod: supervised\nseed: 2\ndata: {data}\nstudent: {{arch: {arch}, train: {{steps: 12, batch_size: 32, lr: 0.002}}}}\n", $"{id}.yaml");
            var result = new Runner(new RunnerOptions { RunsRoot = dir, RunId = id, LogEvery = 50 }, TextWriter.Null).Run(spec);
            using var back = JsonDocument.Parse(PyTorch("evaluate", Path.Combine(dir, id), folder));
            Assert.Equal(arch, back.RootElement.GetProperty("arch").GetString());
            Assert.Equal(spec.Data.ImageSize, back.RootElement.GetProperty("image_size").GetInt32());
            Assert.InRange(back.RootElement.GetProperty("accuracy").GetDouble() - result.StudentAccuracy, -0.01, 0.01);
            // student.pth lists its tensors in the order of the PyTorch module's own state_dict() (batch norms' buffers beside their weights)
            Assert.True(back.RootElement.GetProperty("same_key_order").GetBoolean(), $"{arch}: student.pth's keys are not in PyTorch's state_dict order");
        }

        // what a user gets wrong is one line and exit 1, never a traceback; the accuracy comes before an export that fails
        var mlp = Path.Combine(dir, "mlp");
        Assert.Contains("evaluate: /nonexistent/run: no such run directory or weights file", PyTorchFails("evaluate", "/nonexistent/run", mnist).Err);
        Assert.Contains("is not a finished run's directory: it has no result.json", PyTorchFails("evaluate", dir, mnist).Err);
        Assert.Contains("ClusterDistill's own format", PyTorchFails("evaluate", Path.Combine(mlp, "student.pt"), "hinton-400", mnist).Err);
        Assert.Contains("--dataset cifar10: the run's student was trained on mnist at 28 pixels", PyTorchFails("evaluate", mlp, mnist, "--dataset", "cifar10").Err);
        Assert.Contains("does not fit lenet5-half for mnist at 32 pixels", PyTorchFails("evaluate", Path.Combine(mlp, "student.pth"), "lenet5-half", mnist).Err);
        Assert.Contains("architecture 'lenet7' is not one of", PyTorchFails("evaluate", Path.Combine(mlp, "student.pth"), "lenet7", mnist).Err);
        // weights that fit a network that cannot take the size asked for (LeNet-5's layers need 32 pixels)
        PyTorch("models", Path.Combine(dir, "made"), "lenet5-half");
        Assert.Contains("lenet5-half cannot evaluate 28-pixel images", PyTorchFails("evaluate", Path.Combine(dir, "made", "lenet5-half.pth"), "lenet5-half", mnist, "--size", "28").Err);
        Assert.Contains("has no t10k-images-idx3-ubyte", PyTorchFails("evaluate", mlp, dir).Err);
        var (output, err) = PyTorchFails("evaluate", mlp, mnist, "--onnx", "/nonexistent/folder/s.onnx");
        Assert.Contains("torch.onnx.export to /nonexistent/folder/s.onnx failed", err);
        using var still = JsonDocument.Parse(output);
        Assert.True(still.RootElement.GetProperty("accuracy").GetDouble() > 0);
    }

    /// <summary>tools/torch_interop.py run to fail: its exit code is 1 and its stderr one line without a traceback.</summary>
    private static (string Out, string Err) PyTorchFails(params string[] args)
    {
        var psi = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Repo.Root() };
        psi.ArgumentList.Add(Path.Combine(Repo.Root(), "tools", "torch_interop.py"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(2)), "tools/torch_interop.py took over 2 minutes");
        var err = stderr.Result;
        Assert.True(p.ExitCode == 1, $"tools/torch_interop.py {string.Join(' ', args)}: exit {p.ExitCode}\n{err}");
        Assert.DoesNotContain("Traceback", err);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => !l.StartsWith("/usr/lib/python3/", StringComparison.Ordinal) && !l.TrimStart().StartsWith("warnings.warn", StringComparison.Ordinal));
        return (stdout.Result, err);
    }
}
