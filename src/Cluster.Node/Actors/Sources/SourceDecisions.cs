using Distill.Engine.Pipeline;
using Distill.Engine.Specs;

namespace Cluster.Node.Actors;

/// <summary>The source entity's scheduling, storing and releasing, as pure decisions (tested without an actor).</summary>
public static class SourceDecisions
{
    /// <summary>Checkpoint interval of a run that evaluates only at its end and names none.</summary>
    public const int DefaultCheckpointEvery = 500;

    /// <summary>
    /// Units of source work between the source's checkpoints: the spec's generator interval, else a
    /// quarter of a batch that takes many units (a round in progress survives a restart), else the
    /// student's interval.
    /// </summary>
    public static long CheckpointEvery(ClusterSpec cluster, BatchPlan plan, long evalEvery) =>
        cluster.GeneratorCheckpointEvery > 0 ? cluster.GeneratorCheckpointEvery
        : plan.UnitsPerBatch > 1 ? Math.Max(1, plan.UnitsPerBatch / 4)
        : cluster.CheckpointEvery > 0 ? cluster.CheckpointEvery : evalEvery > 0 ? evalEvery : DefaultCheckpointEvery;

    /// <summary>Whether a checkpoint is due with `unitsTotal` units done over the run (or at its last batch).</summary>
    public static bool CheckpointDue(long unitsTotal, long every, bool lastBatch) => lastBatch || every > 0 && unitsTotal % every == 0;

    /// <summary>The batch to work on next, if any student waits for it or a later one (one at a time, in order; below it are being stored).</summary>
    public static long? NextToMake(long made, long produced, long? lastWanted)
    {
        var next = Math.Max(made, produced) + 1;
        return lastWanted is { } w && w >= next ? next : null;
    }

    /// <summary>
    /// Group commit: a made batch waits to be stored with the next one while that one is being made;
    /// it is stored now when it carries a checkpoint, when batches take many units (rounds are
    /// long), when no next batch could start (the students' windows are full) or when the group is full.
    /// </summary>
    public static bool StoreNow(bool hasCheckpoint, int unitsPerBatch, bool nextStarted, int unstored, int maxGroup) =>
        hasCheckpoint || unitsPerBatch > 1 || !nextStarted || unstored >= maxGroup;

    /// <summary>
    /// Most batches in one group: the window less two, so that a student always has two of its
    /// window stored (one training, one next) when the source stores its group.
    /// </summary>
    public static int MaxGroup(int window) => Math.Clamp(window - 2, 1, 8);

    /// <summary>The batches every replica has released (null: nothing new to drop).</summary>
    public static long? ReleaseUpTo(IReadOnlyDictionary<string, long> releasedBy, int replicas, long releasedUpTo)
    {
        if (releasedBy.Count < replicas) return null;
        var upTo = releasedBy.Values.Min();
        return upTo > releasedUpTo ? upTo : null;
    }

    /// <summary>
    /// Whether the source that makes batches again must be built afresh before it makes batch
    /// `target`: there is none, it is past the target, or one of the source's checkpoints before
    /// the target is nearer than where it stands (replay from there is shorter).
    /// </summary>
    public static bool ReopenRebuilder(long? rebuilderAt, long target, long? newestCheckpointBefore) =>
        rebuilderAt is not { } at || at >= target || newestCheckpointBefore is { } c && c > at;

    /// <summary>Units in the next job: enough to fill the slice target at the measured time per unit.</summary>
    public static int UnitsPerJob(TimeSpan target, double secondsPerUnit) =>
        secondsPerUnit > 0 ? (int)Math.Clamp(target.TotalSeconds / secondsPerUnit, 1, 1000) : 1;
}
