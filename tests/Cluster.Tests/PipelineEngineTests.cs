using Distill.Engine.Pipeline;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// The engine parts the actors drive: the split DAFL loop must compute what the one-loop trainer
/// computes, and data-parallel replicas with a fixed-order gradient average must match one
/// process training on the combined batch.
/// </summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class PipelineEngineTests
{
    public PipelineEngineTests() => Torch.Init();

    private static readonly DaflSpec Dafl = new() { Steps = 6, BatchSize = 16, GeneratorWidth = 8, GeneratorLr = 0.02, Activation = "code", Entropy = "code" };
    private static readonly TrainSpec StudentTrain = new() { Optimizer = "adam", Lr = 0.002 };

    private static Classifier Model(string arch, int seed)
    {
        manual_seed(seed);
        return ModelFactory.Create(arch, 1, 32, 10);
    }

    [Fact]
    public void Should_compute_the_same_weights_split_into_generator_teacher_and_student_as_in_one_loop()
    {
        using var teacher = Model("lenet5", 11);
        using var studentA = Model("lenet5-half", 12);
        using var studentB = Model("lenet5-half", 12);
        using (var loop = new DaflTrainer(teacher, studentA, Dafl, StudentTrain, CPU, seed: 5))
            for (var i = 0; i < Dafl.Steps; i++) loop.TrainStep(wantMetrics: false);

        using var generator = new DaflSynthesizer(teacher, Dafl, CPU, seed: 5);
        using var student = new StudentTrainer(studentB, StudentTrain, Dafl.Steps);
        for (var i = 0; i < Dafl.Steps; i++)
        {
            using var batch = generator.Next(wantMetrics: false);
            // as the teacher actor does: label the batch again from the images alone
            using var probs = SoftLabels.Label(teacher, batch.Images, 1);
            student.TrainStep(batch.Images, probs, 1, wantLoss: false);
        }
        foreach (var (a, b) in studentA.parameters().Zip(studentB.parameters()))
            Assert.True(a.eq(b).all().item<bool>(), "split pipeline and one loop differ");
    }

    /// <summary>The source entity's guard rollback: weights and moments from the checkpoint, the step and latent stream kept, the rate scaled from where it stands.</summary>
    [Fact]
    public void Should_roll_the_generator_back_to_a_checkpoints_weights_keeping_its_step_and_latent_stream()
    {
        using var teacher = Model("lenet5", 11);
        using var rolled = new DaflSynthesizer(teacher, Dafl, CPU, seed: 5);
        using var straight = new DaflSynthesizer(teacher, Dafl, CPU, seed: 5);
        using var atTwo = new DaflSynthesizer(teacher, Dafl, CPU, seed: 5);
        static byte[] Save(DaflSynthesizer g) { using var ms = new MemoryStream(); using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) g.SaveState(w); return ms.ToArray(); }
        static void Steps(DaflSynthesizer g, int n) { for (var i = 0; i < n; i++) g.Next(false).Dispose(); }
        Steps(rolled, 2);
        var two = Save(rolled);
        Steps(rolled, 3);
        Steps(straight, 5);
        using (var r = new BinaryReader(new MemoryStream(two))) atTwo.LoadState(r);

        Assert.True(rolled.CanRollBack);
        using (var r = new BinaryReader(new MemoryStream(two))) rolled.RollBack(r, 0.5);
        Assert.Equal(5, rolled.Step);
        Assert.Equal(0.5 * straight.Lr, rolled.Lr, 12);
        foreach (var (a, b) in rolled.Generator.parameters().Zip(atTwo.Generator.parameters()))
            Assert.True(a.eq(b).all().item<bool>(), "the weights are not the checkpoint's");
        Assert.False(rolled.Generator.parameters().Zip(straight.Generator.parameters()).All(p => p.Item1.eq(p.Item2).all().item<bool>()));
        // the random stream is saved last: the rolled-back one stands where five batches left it, not at two
        using var probe = new TorchSharp.torch.Generator(1);
        int n;
        using (var s = probe.get_state()) n = (int)s.numel();
        var (mine, five) = (Save(rolled), Save(straight));
        Assert.True(mine.AsSpan(mine.Length - n).SequenceEqual(five.AsSpan(five.Length - n)), "the latent stream went back with the weights");
        Assert.False(mine.AsSpan(mine.Length - n).SequenceEqual(two.AsSpan(two.Length - n)));
        // a second rollback halves the rate again, from where it stands
        using (var r = new BinaryReader(new MemoryStream(two))) rolled.RollBack(r, 0.5);
        Assert.Equal(0.25 * straight.Lr, rolled.Lr, 12);
        // a source that learns nothing across batches cannot go back
        using var noise = new NoiseSource(4, 1, 8, 3, CPU);
        Assert.False(noise.CanRollBack);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void Should_match_one_process_on_the_combined_batch_when_replicas_average_gradients_in_order(int replicas)
    {
        const int batch = 32, steps = 5;
        var train = new TrainSpec { Optimizer = "sgd", Lr = 0.05, Momentum = 0.9 };
        using var single = new StudentTrainer(Model("lenet5-half", 3), train, steps);
        var workers = Enumerable.Range(0, replicas).Select(_ => new StudentTrainer(Model("lenet5-half", 3), train, steps)).ToArray();
        using var g = new TorchSharp.torch.Generator(9);
        for (var s = 0; s < steps; s++)
        {
            using var x = randn([batch, 1, 32, 32], generator: g);
            using var p = nn.functional.softmax(randn([batch, 10], generator: g) * 3, 1);
            single.TrainStep(x, p, 4, wantLoss: false);
            var per = batch / replicas;
            var grads = workers.Select((w, r) => w.ComputeGradient(x.narrow(0, r * per, per), p.narrow(0, r * per, per), 4).Gradient).ToArray();
            var sum = grads[0].clone();
            for (var r = 1; r < replicas; r++) sum.add_(grads[r]);
            sum.div_(replicas);
            foreach (var w in workers) w.ApplyGradient(sum);
            foreach (var t in grads) t.Dispose();
            sum.Dispose();
        }
        foreach (var w in workers)
            foreach (var (a, b) in single.Model.parameters().Zip(w.Model.parameters()))
                Assert.True(a.allclose(b, rtol: 1e-4, atol: 1e-6), $"replica weights differ from the combined batch by {(a - b).abs().max().item<float>():G3}");
        // and the replicas agree with each other exactly: they applied the same bits
        foreach (var (a, b) in workers[0].Model.parameters().Zip(workers[^1].Model.parameters()))
            Assert.True(a.eq(b).all().item<bool>());
        foreach (var w in workers) { w.Model.Dispose(); w.Dispose(); }
        single.Model.Dispose();
    }

    [Theory]
    [InlineData("adam")]
    [InlineData("sgd")]
    public void Should_continue_bit_for_bit_from_a_saved_student_state_including_the_optimiser(string optimizer)
    {
        var train = new TrainSpec { Optimizer = optimizer, Lr = 0.01, Momentum = 0.9 };
        using var a = new StudentTrainer(Model("lenet5-half", 5), train, 20);
        using var b = new StudentTrainer(Model("lenet5-half", 6), train, 20);
        using var g = new TorchSharp.torch.Generator(3);
        var batches = Enumerable.Range(0, 10).Select(_ => (randn([8, 1, 32, 32], generator: g), nn.functional.softmax(randn([8, 10], generator: g), 1))).ToArray();
        for (var i = 0; i < 5; i++) a.TrainStep(batches[i].Item1, batches[i].Item2, 1, false);
        using (var ms = new MemoryStream())
        {
            using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) a.SaveState(w);
            ms.Position = 0;
            using var r = new BinaryReader(ms);
            b.LoadState(r);
        }
        for (var i = 5; i < 10; i++)
        {
            a.TrainStep(batches[i].Item1, batches[i].Item2, 1, false);
            b.TrainStep(batches[i].Item1, batches[i].Item2, 1, false);
        }
        Assert.Equal(a.Step, b.Step);
        foreach (var (pa, pb) in a.Model.parameters().Zip(b.Model.parameters()))
            Assert.True(pa.eq(pb).all().item<bool>(), $"resumed weights differ by {(pa - pb).abs().max().item<float>():G3}");
        a.Model.Dispose();
        b.Model.Dispose();
    }

    [Fact]
    public void Should_refuse_soft_labels_of_another_shape()
    {
        using var student = new StudentTrainer(Model("lenet5-half", 1), StudentTrain, 1);
        var e = Assert.Throws<ArgumentException>(() => student.TrainStep(zeros(4, 1, 32, 32), zeros(4, 9), 1, false));
        Assert.Contains("soft labels [4, 9]", e.Message);
    }
}
