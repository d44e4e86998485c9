using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Pipeline;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>A finished DeepInversion round: the kept (lowest-loss) batch and the teacher's probabilities on it at T.</summary>
public sealed record RoundBatch(int Round, Tensor Images, Tensor Probs, double BestLoss) : IDisposable
{
    public void Dispose()
    {
        Images.Dispose();
        Probs.Dispose();
    }
}

/// <summary>
/// The generator half of DeepInversion / ADI (SPEC.md §4): round after round, one class-balanced
/// batch of pixels optimised against the teacher's BatchNorm statistics (and, for ADI, against the
/// student as it stood when the round began), then labelled by the teacher at the student's
/// temperature. Each round draws from its own generators seeded by (seed, round), so a round
/// needs no random state from the rounds before it: a generator actor restarted elsewhere, or the
/// one-process loop, synthesises the same round bit for bit. A round in progress can be saved and
/// resumed mid-way (a paper-sized round is 2,000 iterations).
/// </summary>
public sealed class RoundSynthesizer : IDisposable
{
    private readonly Classifier teacher;
    private readonly DeepInversionSpec spec;
    private readonly double[] mean, std;
    private readonly Device device;
    private readonly long seed;
    private readonly BatchNormStatistics bnStats;
    private ImageSynthesizer? current;
    private Generator? roundRng;
    private Classifier? competitor;

    public RoundSynthesizer(Classifier teacher, DeepInversionSpec spec, double[] mean, double[] std, Device device, long seed)
    {
        this.teacher = teacher;
        this.spec = spec;
        this.mean = mean;
        this.std = std;
        this.device = device;
        this.seed = seed;
        SourceTrainer.Freeze(teacher);
        bnStats = new BatchNormStatistics(teacher) { Enabled = false };
    }

    /// <summary>Rounds finished.</summary>
    public int Round { get; private set; }
    public bool InRound => current is not null;
    /// <summary>Pixel iterations per round.</summary>
    public int Iterations => spec.Iterations;
    /// <summary>Iterations done in the round in progress (0 between rounds).</summary>
    public int Iteration => current?.Iteration ?? 0;

    /// <summary>The seed of round r's generators: a fixed mix of (seed, round), the same on every node.</summary>
    public static ulong RoundSeed(long seed, int round) => unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)round * 0xBF58476D1CE4E5B9UL + 1);

    /// <summary>Starts round Round + 1; ADI passes the student to compete with (held as it is for the whole round).</summary>
    public void Begin(Classifier? student)
    {
        if (current is not null) throw new InvalidOperationException($"round {Round + 1} is already in progress");
        var round = Round + 1;
        competitor = spec.CompetitionWeight > 0 ? student : null;
        competitor?.eval();   // the student's BN running statistics must not move while it judges pixels
        roundRng = new Generator(RoundSeed(seed, round)); // CPU: TorchSharp makes no other
        using var targets = BalancedTargets(round);
        current = new ImageSynthesizer(teacher, bnStats, competitor, spec, targets, mean, std, device, roundRng);
    }

    private Tensor BalancedTargets(int round)
    {
        using var g = new Generator(RoundSeed(seed, round) ^ 0x5DEECE66DUL);
        using var scope = NewDisposeScope();
        var ordered = arange(spec.BatchSize, int64) % teacher.Info.Classes;
        return ordered.index_select(0, randperm(spec.BatchSize, generator: g)).MoveToOuterDisposeScope();
    }

    /// <summary>One pixel iteration; after the round's last one, the kept batch (the caller owns it) and the next round may begin.</summary>
    public (Dictionary<string, double>? Metrics, RoundBatch? Done) Iterate(bool wantMetrics)
    {
        var synth = current ?? throw new InvalidOperationException("no round in progress: call Begin first");
        bnStats.Enabled = true;
        Dictionary<string, double>? m;
        try { m = synth.Iterate(wantMetrics); }
        finally { bnStats.Enabled = false; bnStats.Clear(); }
        if (synth.Iteration < spec.Iterations) return (m, null);
        var done = Finish(synth);
        return (m, done);
    }

    private RoundBatch Finish(ImageSynthesizer synth)
    {
        using var scope = NewDisposeScope();
        var kept = synth.Best.detach().clone();
        Tensor probs;
        using (no_grad()) probs = SoftLabels.FromLogits(teacher.call(kept), spec.StudentTemperature);
        Round++;
        var batch = new RoundBatch(Round, kept.cpu().DetachFromDisposeScope(), probs.cpu().DetachFromDisposeScope(), synth.BestLoss);
        EndRound();
        return batch;
    }

    private void EndRound()
    {
        current?.Dispose();
        current = null;
        roundRng?.Dispose();
        roundRng = null;
        competitor = null;
    }

    /// <summary>Continues after `round` finished rounds (stored elsewhere), dropping any round in progress.</summary>
    public void SkipTo(int round)
    {
        if (round < 0) throw new ArgumentOutOfRangeException(nameof(round));
        EndRound();
        Round = round;
    }

    /// <summary>Rounds finished and the round in progress, with the student it competes against (ADI) as it was at Begin.</summary>
    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "deepinversion-rounds");
        w.Write(Round);
        w.Write(current is not null);
        if (current is null) return;
        current.SaveState(w);
        StateIo.WriteGenerator(w, roundRng!);
        w.Write(competitor is not null);
        if (competitor is not null) StateIo.WriteModule(w, competitor);
    }

    /// <summary>Restores; a round in progress resumes with the student model passed (ADI), its weights as saved.</summary>
    public void LoadState(BinaryReader r, Classifier? student)
    {
        StateIo.Expect(r, "deepinversion-rounds");
        var round = r.ReadInt32();
        EndRound();
        Round = round;
        if (!r.ReadBoolean()) return;
        var hadCompetitor = false;
        Begin(student);
        try
        {
            current!.LoadState(r);
            StateIo.ReadGenerator(r, roundRng!);
            hadCompetitor = r.ReadBoolean();
            if (hadCompetitor != competitor is not null)
                throw new InvalidDataException($"round {round + 1} was saved {(hadCompetitor ? "with" : "without")} a student to compete with, and is restored {(competitor is null ? "without" : "with")} one");
            if (competitor is not null) StateIo.ReadModule(r, competitor);
        }
        catch
        {
            EndRound();
            throw;
        }
    }

    public void Dispose()
    {
        EndRound();
        bnStats.Dispose();
    }
}

/// <summary>
/// DeepInversion / ADI rounds as the source entity's batch source: a unit is one pixel iteration,
/// a batch is a round (with the teacher's probabilities at the student's temperature). ADI's
/// rounds compete with `competitor`, the initial student for round 1 and the weights handed to
/// <see cref="CompeteWith"/> for each later one. Catching up needs no replay: a round depends on
/// (seed, round) alone.
/// </summary>
public sealed class RoundSource(RoundSynthesizer rounds, Classifier? competitor) : IBatchSource
{
    public long Made => rounds.Round;
    public int UnitsDone => rounds.Iteration;

    public SourceBatch? Advance(bool wantMetrics)
    {
        if (!rounds.InRound) rounds.Begin(competitor);
        var (metrics, done) = rounds.Iterate(wantMetrics: rounds.Iteration + 1 == rounds.Iterations);
        if (done is null) return null;
        metrics ??= [];
        metrics["best_loss"] = done.BestLoss;
        return new SourceBatch(done.Images, null, null, metrics, done.Probs);
    }

    public void CompeteWith(byte[] weights)
    {
        if (competitor is null) throw new InvalidOperationException("these rounds do not compete with the student");
        if (rounds.InRound) throw new InvalidOperationException($"round {rounds.Round + 1} is in progress: it keeps the student it began with");
        Models.ModuleState.Load(competitor, weights);
    }

    public Tensor? Samples(int count, SourceBatch made) => made.Images.narrow(0, 0, Math.Min(count, made.Images.shape[0]));

    public long CatchUp(long made, Action<long, SourceBatch>? replayed)
    {
        if (rounds.Round != made) rounds.SkipTo((int)made);
        return 0;
    }

    /// <summary>A round depends on (seed, round) alone: nothing learned carries over to go back to.</summary>
    public bool CanRollBack => false;
    public void RollBack(BinaryReader checkpoint, double lrFactor) => throw new NotSupportedException("a round depends on (seed, round) alone");

    public void SaveState(BinaryWriter writer) => rounds.SaveState(writer);
    public void LoadState(BinaryReader reader) => rounds.LoadState(reader, competitor);

    public void Dispose()
    {
        rounds.Dispose();
        competitor?.Dispose();
    }
}
