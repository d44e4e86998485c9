using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// The DeepInversion parts the generator and student entities drive: rounds that depend on
/// (seed, round) alone, a round saved mid-way that resumes bit for bit, and pool batches that
/// depend on (seed, step) alone.
/// </summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class DeepInversionRoundTests
{
    public DeepInversionRoundTests() => Torch.Init();

    private static readonly DeepInversionSpec Spec = new()
    {
        Rounds = 3, BatchSize = 8, Iterations = 7, Lr = 0.1, Jitter = 2, Flip = true, StudentSteps = 4, StudentBatch = 8, StudentTemperature = 3,
    };
    private static readonly double[] Mean = [0.1307], Std = [0.3081];

    private static Classifier Model(string arch, int seed)
    {
        manual_seed(seed);
        return ModelFactory.Create(arch, 1, 32, 10);
    }

    private static RoundBatch RunRound(RoundSynthesizer r, Classifier? competitor)
    {
        r.Begin(competitor);
        while (true)
        {
            var (_, done) = r.Iterate(wantMetrics: false);
            if (done is not null) return done;
        }
    }

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Should_resume_a_round_saved_mid_way_bit_for_bit_and_make_later_rounds_without_the_earlier_ones(bool adaptive)
    {
        var spec = adaptive ? Spec with { CompetitionWeight = 1 } : Spec;
        using var teacher = Model("resnet20", 21);
        using var student = Model("lenet5-half", 22);

        // uninterrupted: rounds 1 and 2
        using var whole = new RoundSynthesizer(teacher, spec, Mean, Std, CPU, seed: 9);
        using var round1 = RunRound(whole, student);
        using var round2 = RunRound(whole, student);
        Assert.Equal(2, whole.Round);
        Assert.False(Same(round1.Images, round2.Images), "two rounds synthesised the same images");

        // round 1 again, saved after 3 of its 7 iterations and resumed in a new synthesiser
        byte[] saved;
        using (var first = new RoundSynthesizer(teacher, spec, Mean, Std, CPU, seed: 9))
        {
            first.Begin(student);
            for (var i = 0; i < 3; i++) Assert.Null(first.Iterate(false).Done);
            using var ms = new MemoryStream();
            using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) first.SaveState(w);
            saved = ms.ToArray();
        }
        using var competitorCopy = Model("lenet5-half", 99);   // other weights: the checkpoint must bring the student's back
        using var resumed = new RoundSynthesizer(teacher, spec, Mean, Std, CPU, seed: 9);
        using (var r = new BinaryReader(new MemoryStream(saved))) resumed.LoadState(r, adaptive ? competitorCopy : null);
        Assert.True(resumed.InRound);
        Assert.Equal(3, resumed.Iteration);
        RoundBatch? again = null;
        while (again is null) again = resumed.Iterate(false).Done;
        using (again)
        {
            Assert.True(Same(round1.Images, again.Images), "the resumed round kept a different batch");
            Assert.True(Same(round1.Probs, again.Probs));
            Assert.Equal(round1.BestLoss, again.BestLoss);
        }

        // round 2 made by a synthesiser that never ran round 1 (a generator restarted after it was stored)
        using var skipped = new RoundSynthesizer(teacher, spec, Mean, Std, CPU, seed: 9);
        skipped.SkipTo(1);
        using var round2b = RunRound(skipped, student);
        Assert.True(Same(round2.Images, round2b.Images), "round 2 depends on more than (seed, round)");

        // the labels are the teacher's softmax at the student's temperature on the kept images
        using (no_grad())
        {
            using var expected = nn.functional.softmax(teacher.call(round1.Images) / spec.StudentTemperature, 1);
            Assert.True(round1.Probs.allclose(expected, rtol: 1e-5, atol: 1e-7));
        }
    }

    [Fact]
    public void Should_refuse_to_resume_an_adi_round_without_the_student_it_competed_with()
    {
        var spec = Spec with { CompetitionWeight = 1 };
        using var teacher = Model("resnet20", 21);
        using var student = Model("lenet5-half", 22);
        using var r = new RoundSynthesizer(teacher, spec, Mean, Std, CPU, seed: 9);
        r.Begin(student);
        r.Iterate(false);
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) r.SaveState(w);
        using var other = new RoundSynthesizer(teacher, spec, Mean, Std, CPU, seed: 9);
        ms.Position = 0;
        var e = Assert.Throws<InvalidDataException>(() => other.LoadState(new BinaryReader(ms), null));
        Assert.Contains("compete", e.Message);
        Assert.False(other.InRound);
    }

    [Fact]
    public void Should_draw_each_steps_batch_from_seed_and_step_alone_and_only_from_the_rounds_it_may_see()
    {
        using var a = new SyntheticPool();
        using var b = new SyntheticPool();
        for (var round = 1; round <= 3; round++)
        {
            // round k's images are all k, so a drawn image tells which round it came from
            using var x = full(new long[] { 8, 1, 4, 4 }, (float)round);
            using var p = softmax(randn(8, 10), 1);
            a.Add(round, x, p);
            if (round < 3) b.Add(round, x, p);
        }
        Assert.Throws<ArgumentException>(() => a.Add(5, zeros(8, 1, 4, 4), zeros(8, 10)));
        Assert.Throws<ArgumentException>(() => a.Add(4, zeros(8, 1, 5, 5), zeros(8, 10)));

        // the same step draws the same batch from pools that hold more or fewer later rounds
        var (x1, p1) = a.Sample(seed: 4, step: 11, batch: 64, CPU, rounds: 2);
        var (x2, p2) = b.Sample(seed: 4, step: 11, batch: 64, CPU, rounds: 2);
        Assert.True(Same(x1, x2) && Same(p1, p2));
        Assert.True(x1.le(2).all().item<bool>(), "a step of round 2 drew an image of round 3");
        Assert.True(x1.eq(1).any().item<bool>() && x1.eq(2).any().item<bool>(), "64 draws from two rounds came from one");
        var (x3, _) = a.Sample(seed: 4, step: 12, batch: 64, CPU, rounds: 2);
        Assert.False(Same(x1, x3), "two steps drew the same batch");
        var (x4, _) = a.Sample(seed: 4, step: 12, batch: 256, CPU, rounds: 3);
        Assert.True(x4.eq(3).any().item<bool>());
        Assert.Throws<InvalidOperationException>(() => b.Sample(4, 12, 8, CPU, rounds: 3));
    }
}
