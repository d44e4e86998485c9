using Cluster.Contracts.Events;
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
    /// Whether batch `seq` is held in memory until released rather than written before it is sent:
    /// where memory is given for it and the batch can be made again cheaply and bit for bit (one unit
    /// of work, not made against the student's weights), so a restart that loses it makes it again.
    /// A round of many units, or one that competed with weights that will be gone, is written.
    /// </summary>
    public static bool HoldInMemory(ClusterSpec cluster, BatchPlan plan, long seq) =>
        cluster.BatchMemoryMb > 0 && plan.UnitsPerBatch == 1 && plan.StudentStepFor(seq) is null;

    /// <summary>The held batches to write to disk, oldest first, so that what stays held fits in `limitBytes`.</summary>
    public static IReadOnlyList<long> ToWrite(IEnumerable<(long Seq, long Bytes)> held, long limitBytes)
    {
        var all = held.OrderBy(h => h.Seq).ToList();
        var over = all.Sum(h => h.Bytes) - limitBytes;
        var write = new List<long>();
        foreach (var (seq, bytes) in all)
        {
            if (over <= 0) break;
            write.Add(seq);
            over -= bytes;
        }
        return write;
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
    /// the target is nearer than where it stands (replay from there is shorter), or is where it
    /// stands without its having been restored there: replay through a guard rollback's
    /// checkpoint would miss the rollback, and restoring one that replay reached costs little.
    /// </summary>
    /// <param name="restoredAt">the batch the rebuilder was restored at (or made afresh: 0)</param>
    public static bool ReopenRebuilder(long? rebuilderAt, long? restoredAt, long target, long? newestCheckpointBefore) =>
        rebuilderAt is not { } at || at >= target || newestCheckpointBefore is { } c && (c > at || c == at && restoredAt != at);

    /// <summary>
    /// Where the guard takes a collapsed source back to: its newest whole-batch checkpoint before
    /// the last batch that passed a check (made from that state or a later one; a later checkpoint
    /// may hold the collapse already), or a later rollback's (it holds what an earlier target had
    /// learned, so a collapse again goes back there with the rate lowered again); null: there is
    /// none, so its initial state, made afresh from the seed.
    /// </summary>
    public static CheckpointWritten? RollbackTarget(IEnumerable<CheckpointWritten> checkpoints, long lastHealthy, int unitsPerBatch) =>
        checkpoints.LastOrDefault(c => (c.Rollback || c.Seq < lastHealthy) && c.Step == c.Seq * unitsPerBatch);

    /// <summary>
    /// The last batch that passed the guard, from the journal alone (a source that restarts knows
    /// what it knew): batches are checked at every multiple of checkEvery, and one that failed was
    /// journaled with its rollback's checkpoint, which is kept for good. 0: none.
    /// </summary>
    public static long LastHealthy(long produced, int checkEvery, IEnumerable<CheckpointWritten> checkpoints)
    {
        var failed = checkpoints.Where(c => c.Rollback).Select(c => c.Seq).ToHashSet();
        for (var k = produced / checkEvery * checkEvery; k > 0; k -= checkEvery)
            if (!failed.Contains(k)) return k;
        return 0;
    }

    /// <summary>Units in the next job: enough to fill the slice target at the measured time per unit.</summary>
    public static int UnitsPerJob(TimeSpan target, double secondsPerUnit) =>
        secondsPerUnit > 0 ? (int)Math.Clamp(target.TotalSeconds / secondsPerUnit, 1, 1000) : 1;
}
