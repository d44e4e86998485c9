using Akka.Actor;
using Akka.Event;
using Cluster.Contracts.Events;
using Cluster.Contracts.Tensors;
using Cluster.Node.Hosting;
using Cluster.Node.Storage;
using Distill.Engine.Pipeline;
using MessagePack;
using static Cluster.Node.Actors.SourceJobs;

namespace Cluster.Node.Actors;

/// <summary>
/// Making batches again: a student that fell back to an older checkpoint (its newest was corrupt,
/// or none was usable) asks for batches every student had released, and a stored batch whose blob
/// is missing or corrupt cannot be served from the pool. A second source (the rebuilder), restored
/// from the source's newest checkpoint before the batch or made afresh from the seed, replays to it
/// and makes it again, bit for bit, beside the source's own work. A batch that competed with the
/// student's weights (ADI) cannot be made again once those are gone: the run fails with the reason.
/// </summary>
public sealed partial class SourceEntity
{
    /// <summary>Owned by the compute thread: the mailbox only passes it to jobs.</summary>
    private IBatchSource? rebuilder;
    /// <summary>The batch the rebuilder stands at, as of its last job (null: no rebuilder).</summary>
    private long? rebuilderAt;
    /// <summary>The batch the rebuilder was restored at (0: made afresh).</summary>
    private long? rebuilderRestoredAt;
    private bool rebuilding;
    private int rebuildUnitsPerJob = 1;
    /// <summary>Batches to make again, with who asked.</summary>
    private readonly SortedDictionary<long, HashSet<string>> toRebuild = [];
    /// <summary>Stored batches whose blobs could not be read: made again, their blobs are written again.</summary>
    private readonly HashSet<long> lost = [];

    /// <param name="routine">what a restart or a failover leads to (logged as information); otherwise something was lost (a warning)</param>
    private void RebuildLater(long seq, string student, string why, bool routine = true)
    {
        if (!toRebuild.TryGetValue(seq, out var who))
        {
            toRebuild[seq] = who = [];
            if (routine) Log.Info("{0}: {1} asked for batch {2}, which {3}; making it again", Id, student, seq, why);
            else Log.Warning("{0}: {1} asked for batch {2}, which {3}; making it again", Id, student, seq, why);
        }
        who.Add(student);
    }

    /// <summary>The stored batch's payloads, from memory if held, or null (and the batch is to be made again) when a blob is missing or corrupt.</summary>
    private (TensorPayload Images, TensorPayload? Soft, TensorPayload? TrueLabels)? TryLoad(BatchStored stored, string student)
    {
        if (held.TryGetValue(stored.Seq, out var h)) return (h.Images, h.SoftLabels, h.TrueLabels);
        if (stored.Held && !OwnBlobs.Exists(stored.Blob))
        {
            lost.Add(stored.Seq);
            RebuildLater(stored.Seq, student, "was held in memory and never written (the source restarted since)");
            return null;
        }
        try
        {
            return (Load(stored.Blob), stored.LabelsBlob is { } lb ? Load(lb) : null, stored.TrueLabelsBlob is { } tb ? Load(tb) : null);
        }
        catch (Exception e) when (e is BlobException or MessagePackSerializationException or IOException)
        {
            lost.Add(stored.Seq);
            RebuildLater(stored.Seq, student, $"is stored but unreadable ({e.Message})", routine: false);
            return null;
        }
    }

    /// <summary>Starts the rebuilder's next job, if a batch is to be made again and the source is ready.</summary>
    private void Rebuild()
    {
        if (rebuilding || source is null || State.Finished || toRebuild.Count == 0) return;
        var target = toRebuild.Keys.First();
        if (plan!.StudentStepFor(target) is { } step)
        {
            Fail($"batch {target} is needed again, but it was made against the student's weights after step {step}, which are gone: it cannot be made again");
            return;
        }
        rebuilding = true;
        var before = State.Checkpoints.Where(c => c.Seq < target).Select(c => (long?)c.Seq).Max();
        if (SourceDecisions.ReopenRebuilder(rebuilderAt, rebuilderRestoredAt, target, before))
        {
            var (old, s, data, t, checkpoints, own) = (rebuilder, spec!, Services.Data(spec!.Data), teacher, State.Checkpoints, OwnBlobs);
            (rebuilder, rebuilderAt) = (null, null);
            EngineAccess.Compute(Self, () => OpenRebuilder(old, s, data, t, checkpoints, own, target));
            return;
        }
        var (src, units, skipsRounds, temperature, dtype) = (rebuilder!, rebuildUnitsPerJob, plan.UnitsPerBatch > 1, labelTemperature, TensorWire.Parse(spec!.Cluster.SoftLabels));
        EngineAccess.Compute(Self, () => SourceJobs.Rebuild(src, target, units, skipsRounds, temperature, dtype));
    }

    private void OnRebuilderReady(RebuilderReady r)
    {
        (rebuilder, rebuilderAt, rebuilderRestoredAt, rebuilding) = (r.Source, r.Made, r.Made, false);
        if (r.Warning is not null) Log.Warning("{0}: {1}", Id, r.Warning);
        Log.Info("{0}: making batches again from batch {1} (a second source, at batch {2})", Id, toRebuild.Keys.FirstOrDefault(), r.Made);
        Rebuild();
    }

    private void OnRebuildAdvanced(RebuildAdvanced a)
    {
        (rebuilderAt, rebuilding) = (a.Made, false);
        rebuildUnitsPerJob = SourceDecisions.UnitsPerJob(SliceTarget, a.SecondsPerUnit);
        Rebuild();
    }

    private void OnRebuilt(Rebuilt r)
    {
        (rebuilderAt, rebuilding) = (r.Seq, false);
        rebuildUnitsPerJob = SourceDecisions.UnitsPerJob(SliceTarget, r.SecondsPerUnit);
        if (lost.Remove(r.Seq)) StoreAgain(r);
        if (toRebuild.Remove(r.Seq, out var who))
            foreach (var student in who) SendBatch(student, r.Seq, r.Images, r.SoftLabels, r.TrueLabels);
        Log.Info("{0}: batch {1} made again", Id, r.Seq);
        if (toRebuild.Count == 0 && rebuilderAt >= State.ReleasedUpTo)
        {
            // nothing released lies ahead of it: a later lost blob builds a new one
            var old = rebuilder;
            (rebuilder, rebuilderAt) = (null, null);
            EngineAccess.Release(() => old?.Dispose());
        }
        Rebuild();
    }

    /// <summary>
    /// Keeps a lost batch made again as the pool kept it: held in memory again (with its labels),
    /// or its blobs written again; journals their names when the batch made again differs from the
    /// one stored.
    /// </summary>
    private void StoreAgain(Rebuilt r)
    {
        if (!State.Pool.TryGetValue(r.Seq, out var stored)) return;
        var hold = stored.Held && spec!.Cluster.BatchMemoryMb > 0 && !(r.SoftLabels is null && stored.LabelsBlob is not null);
        string Keep(TensorPayload p) => hold ? Name(p)! : Put(p);
        var again = new BatchStored(r.Seq, Keep(r.Images), r.SoftLabels is { } s ? Keep(s) : stored.LabelsBlob, r.TrueLabels is { } t ? Keep(t) : null, hold);
        void Kept()
        {
            if (hold) Hold(r.Seq, new HeldBatch(r.Images, r.SoftLabels, r.TrueLabels));
        }
        // the same names: nothing to journal (a held batch written now is served from disk, as one written when memory ran short)
        if (again with { Held = stored.Held } == stored)
        {
            Kept();
            return;
        }
        Log.Warning("{0}: batch {1} made again differs from the one stored (images {2} vs {3}); the pool keeps the new one", Id, r.Seq, again.Blob[..12], stored.Blob[..12]);
        Persist(again, e =>
        {
            State = State.Apply(e);
            Kept();
        });
    }
}
