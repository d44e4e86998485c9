using static TorchSharp.torch;

namespace Distill.Engine.Pipeline;

/// <summary>
/// One batch from a source: the images, the data's true labels when it has them, and the
/// teacher's logits when the source ran the teacher on the batch anyway (DAFL's generator step),
/// so that nobody runs it again, or its probabilities at the student's temperature when the
/// source computed those (a DeepInversion round). The tensors belong to the holder.
/// </summary>
public sealed record SourceBatch(Tensor Images, Tensor? Labels, Tensor? TeacherLogits, IReadOnlyDictionary<string, double>? Metrics,
    Tensor? TeacherProbabilities = null) : IDisposable
{
    public void Dispose()
    {
        Images.Dispose();
        Labels?.Dispose();
        TeacherLogits?.Dispose();
        TeacherProbabilities?.Dispose();
    }
}

/// <summary>
/// A source that makes a run's batches one step at a time, in order (DAFL's generator, a loader of
/// real data): what the source entity runs and the engine loop steps. Its state (weights,
/// optimiser, random generators, position) goes through SaveState/LoadState; from a saved state it
/// makes the same batches again, which is how a restarted source catches up.
/// </summary>
public interface IStepSource : IDisposable
{
    /// <summary>Batches made so far.</summary>
    long Step { get; }

    /// <summary>The next batch (outside any dispose scope: the caller owns it).</summary>
    SourceBatch Next(bool wantMetrics);

    /// <summary>Images for a sample grid (null: a source of real data draws none).</summary>
    Tensor? Samples(int count);

    /// <summary>Multiplies the source's learning rates by factor (guard rollbacks); a loader has none.</summary>
    void ScaleLearningRates(double factor);

    /// <summary>Whether it learns across batches, so that going back (<see cref="RollBack"/>) changes what it makes.</summary>
    bool CanRollBack { get; }

    /// <summary>
    /// The source entity's guard rollback: what the source has learned (weights, optimiser moments)
    /// as of `checkpoint`, a state <see cref="SaveState"/> wrote earlier, with its learning rates
    /// multiplied by lrFactor from where they stand. Its position (Step, random stream) stays, so the
    /// next batch is still Step + 1.
    /// </summary>
    void RollBack(BinaryReader checkpoint, double lrFactor);

    void SaveState(BinaryWriter writer);
    void LoadState(BinaryReader reader);
}
