using static TorchSharp.torch;

namespace Distill.Engine.Pipeline;

/// <summary>
/// What the source entity runs: a run's batches, made in order in units of work (a generator step
/// makes a batch in one unit; a DeepInversion round takes its pixel iterations), so that a long
/// batch is made in slices between other entities' jobs and checkpointed part-way. From a saved
/// state it makes the same batches again, which is how a restarted source catches up.
/// </summary>
public interface IBatchSource : IDisposable
{
    /// <summary>Batches finished.</summary>
    long Made { get; }

    /// <summary>Units done on the batch in progress (0 between batches).</summary>
    int UnitsDone { get; }

    /// <summary>One unit of work on batch Made + 1; the batch once it is finished (the caller owns it), else null.</summary>
    SourceBatch? Advance(bool wantMetrics);

    /// <summary>The student weights the next batch competes with (<see cref="BatchPlan.Competes"/>), before its first unit.</summary>
    void CompeteWith(byte[] weights);

    /// <summary>Images for the sample grid drawn when batch `made` was finished (null: none; the caller disposes them).</summary>
    Tensor? Samples(int count, SourceBatch made);

    /// <summary>Continues after `made` batches stored elsewhere, replaying what needs replaying; `replayed` sees each batch made again. Returns the batches replayed.</summary>
    long CatchUp(long made, Action<long, SourceBatch>? replayed);

    /// <summary>Whether it learns across batches, so that going back changes what it makes.</summary>
    bool CanRollBack { get; }

    /// <summary>The guard's rollback of what the source learned, its position kept (<see cref="IStepSource.RollBack"/>).</summary>
    void RollBack(BinaryReader checkpoint, double lrFactor);

    void SaveState(BinaryWriter writer);
    void LoadState(BinaryReader reader);
}

/// <summary>A stepwise source (<see cref="IStepSource"/>) as a batch source: one unit per batch; catching up replays the steps since its checkpoint.</summary>
public sealed class StepBatchSource(IStepSource source) : IBatchSource
{
    public long Made => source.Step;
    public int UnitsDone => 0;

    public SourceBatch? Advance(bool wantMetrics) => source.Next(wantMetrics);

    public void CompeteWith(byte[] weights) => throw new NotSupportedException("a stepwise source does not compete with the student");

    public Tensor? Samples(int count, SourceBatch made) => source.Samples(count);

    public long CatchUp(long made, Action<long, SourceBatch>? replayed)
    {
        var from = source.Step;
        while (source.Step < made)
            using (var o = source.Next(false))
                replayed?.Invoke(source.Step, o);
        return source.Step - from;
    }

    public bool CanRollBack => source.CanRollBack;
    public void RollBack(BinaryReader checkpoint, double lrFactor) => source.RollBack(checkpoint, lrFactor);
    public void SaveState(BinaryWriter writer) => source.SaveState(writer);
    public void LoadState(BinaryReader reader) => source.LoadState(reader);
    public void Dispose() => source.Dispose();
}
