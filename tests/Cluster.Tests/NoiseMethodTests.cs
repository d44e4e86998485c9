using System.Text.Json;
using Cluster.Seed.Commands;
using Distill.Engine.Methods;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>The ninth method, added as one file: KD on N(0, 1) noise (DAFL Table 1's "random normal inputs").</summary>
[Collection("mnist")]
public sealed class NoiseMethodTests
{
    [Fact]
    public void Should_register_with_its_section_and_refuse_a_bad_key()
    {
        var m = MethodRegistry.Get("noise");
        Assert.Equal("noise", m.SectionName);
        var spec = SpecParser.Load(Path.Combine(Repo.Root(), "specs", "noise-mnist.yaml"));
        Assert.Same(m, spec.Method);
        Assert.Equal(new NoiseSpec { Steps = 3000, BatchSize = 256, EvalEvery = 500 }, spec.SettingsOf<NoiseSpec>());
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(File.ReadAllText(Path.Combine(Repo.Root(), "specs", "noise-mnist.yaml"))
            .Replace("temperature: 1", "temperature: 0"), "n.yaml"));
        Assert.Equal("noise.temperature", e.Key);
        Assert.Contains("out of range", e.Message);
    }

    [Fact]
    public void Should_draw_standard_normal_batches_again_from_a_saved_state()
    {
        Torch.Init();
        using var a = new NoiseSource(512, 1, 32, seed: 4, CPU);
        using var b = new NoiseSource(512, 1, 32, seed: 4, CPU);
        using (var first = a.Next(false))
        {
            Assert.Null(first.Labels);
            Assert.Equal(new long[] { 512, 1, 32, 32 }, first.Images.shape);
            Assert.InRange(first.Images.mean().item<float>(), -0.01, 0.01);
            Assert.InRange(first.Images.std().item<float>(), 0.99, 1.01);
        }
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) a.SaveState(w);
        ms.Position = 0;
        using (var r = new BinaryReader(ms)) b.LoadState(r);
        Assert.Equal(1, b.Step);
        using var next = a.Next(false);
        using var again = b.Next(false);
        Assert.True(next.Images.eq(again.Images).all().item<bool>(), "a restored source draws the batch the first would have drawn");
        using var other = new NoiseSource(512, 1, 32, seed: 5, CPU);
        using var o = other.Next(false);
        using var firstAgain = new NoiseSource(512, 1, 32, seed: 4, CPU).Next(false);
        Assert.False(o.Images.eq(firstAgain.Images).all().item<bool>(), "another seed, other noise");
    }

    [Fact]
    public void Should_reach_exactly_the_engine_loops_accuracy_through_the_actors()
    {
        Torch.Init();
        var root = Path.Combine(Path.GetTempPath(), $"cd-noise-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        var spec = Path.Combine(root, "noise.yaml");
        File.WriteAllText(spec, """
            name: noise-tiny
            method: noise
            seed: 3
            data: {name: mnist, image_size: 32, train_limit: 1024}
            teacher: {arch: lenet5, train: {steps: 40, batch_size: 64}}
            student:
              arch: lenet5-half
              train: {lr: 0.002}
            noise: {steps: 30, batch_size: 32, eval_every: 10}
            cluster: {checkpoint_every: 10}
            """);
        try
        {
            var outA = new StringWriter();
            Assert.True(CommandLine.Dispatch(["run", spec, "--runs-dir", root, "--run-id", "actors"], outA, outA) == 0, outA.ToString());
            var outB = new StringWriter();
            Assert.True(CommandLine.Dispatch(["run", spec, "--runs-dir", root, "--run-id", "engine", "--engine"], outB, outB) == 0, outB.ToString());
            using var a = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "actors", "result.json")));
            using var b = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "engine", "result.json")));
            Assert.Equal("noise", a.RootElement.GetProperty("method").GetString());
            Assert.False(a.RootElement.GetProperty("student_used_real_data").GetBoolean());
            Assert.Equal(30 * 32, a.RootElement.GetProperty("synthesised_images").GetInt64());
            Assert.Equal(b.RootElement.GetProperty("student_accuracy").GetDouble(), a.RootElement.GetProperty("student_accuracy").GetDouble());
            var actorRows = Cluster.EmbeddedRunTests.MetricRows(Path.Combine(root, "actors", "metrics.csv"));
            var engineRows = Cluster.EmbeddedRunTests.MetricRows(Path.Combine(root, "engine", "metrics.csv"));
            Assert.Equal(engineRows[("noise", 25)]["loss_kd"], actorRows[("student-0", 25)]["loss_kd"]);
            Assert.Equal(engineRows[("noise", 20)]["test_accuracy"], actorRows[("student-0", 20)]["test_accuracy"]);
        }
        finally
        {
            try { Directory.Delete(root, true); } catch (IOException) { }
        }
    }
}
