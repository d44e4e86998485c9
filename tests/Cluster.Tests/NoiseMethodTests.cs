using Distill.Engine.Methods;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>The ninth method, added as one file: KD on N(0, 1) noise (DAFL Table 1's "random normal inputs").</summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class NoiseMethodTests
{
    [Fact]
    public void Should_register_with_its_section_and_refuse_a_bad_key()
    {
        var m = MethodRegistry.Get("noise");
        Assert.Equal("noise", m.SectionName);
        var spec = SpecParser.Load(Path.Combine(Repo.Root(), "specs", "noise-mnist.yaml"));
        Assert.Same(m, spec.Method);
        Assert.Equal(new NoiseSpec { Steps = 24_000, BatchSize = 512, Temperature = 4, EvalEvery = 3000 }, spec.SettingsOf<NoiseSpec>());
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(File.ReadAllText(Path.Combine(Repo.Root(), "specs", "noise-mnist.yaml"))
            .Replace("temperature: 4", "temperature: 0"), "n.yaml"));
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
        using var run = Cluster.EngineParity.Run("noise", """
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
        run.AssertSameNumbers("noise", "loss_kd", lossStep: 25, evalStep: 20);
        Assert.Equal("noise", run.Actors.RootElement.GetProperty("method").GetString());
        Assert.False(run.Actors.RootElement.GetProperty("student_used_real_data").GetBoolean());
        Assert.Equal(30 * 32, run.Actors.RootElement.GetProperty("synthesised_images").GetInt64());
    }
}
