using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Akka.Persistence;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Tensors;
using Cluster.Node.Hosting;
using Cluster.Node.Storage;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;
using MessagePack;
using static Cluster.Node.Actors.SourceJobs;

using Cluster.Node.Telemetry;

namespace Cluster.Node.Actors;

/// <summary>Storing, serving and releasing batches: group commit, checkpoints, the pool.</summary>
public sealed partial class SourceEntity
{
    /// <summary>
    /// Group commit: the batches made since the last store are made durable together (their blobs
    /// flushed and named, then one journal write for all of them) and only then sent; a held batch
    /// is journaled by name and kept in memory (<see cref="Hold"/>). `after` (a guard rollback's
    /// checkpoint) goes in the same write, and `then` runs once it is applied.
    /// </summary>
    private void StoreGroup(CheckpointWritten? after = null, Action? then = null)
    {
        var group = unstored.ToList();
        unstored.Clear();
        var events = new List<IPersistedEvent>(group.Count + 1);
        try
        {
            foreach (var s in group)
                events.Add(new BatchStored(s.Seq, stager.Commit(s.ImagesBlob), s.SoftLabelsBlob is { } sb ? stager.Commit(sb) : null,
                    s.TrueLabelsBlob is { } tb ? stager.Commit(tb) : null, s.Held));
        }
        catch (Exception e) when (e is IOException or BlobException or UnauthorizedAccessException)
        {
            Fail($"batch {group[0].Seq}{(group.Count > 1 ? $"-{group[^1].Seq}" : "")} could not be stored: {e.Message}");
            return;
        }
        // their metrics rows and sample grids are journaled in the same write, to be delivered at least once
        foreach (var s in group)
        {
            if (s.Metrics is { } m) events.Add(Queued(RunMetrics.Of(RunId, Id, s.Seq, m)));
            if (s.SamplesPng is { } png) events.Add(Queued(new RunSamples(RunId, Id, s.Seq, png)));
        }
        if (after is not null) events.Add(after);
        var bySeq = group.ToDictionary(g => g.Seq);
        var journal = Stopwatch.StartNew();
        PersistAll(events, persisted =>
        {
            if (persisted is ReportQueued q)
            {
                Sent(q);
                return;
            }
            if (persisted is not BatchStored e)
            {
                State = State.Apply(persisted);
                then?.Invoke();
                return;
            }
            if (e.Seq == group[0].Seq) NodeMetrics.JournalSeconds.WithLabels(EntityKinds.Generator).Observe(journal.Elapsed.TotalSeconds);
            NodeMetrics.GeneratedBatches.WithLabels(RunId).Inc();
            State = State.Apply(e);
            var s = bySeq[e.Seq];
            if (s.Held) Hold(s.Seq, new HeldBatch(s.Images, s.SoftLabels, s.TrueLabels));
            if (s.Checkpoint is not null) busy = false;
            if (wanted.Remove(s.Seq, out var who))
                foreach (var student in who) SendBatch(student, s.Seq, s.Images, s.SoftLabels, s.TrueLabels);
            Report(s);
            if (competitors.Remove(s.Seq, out var used)) Services.Blobs.Delete(used.WeightsBlob);
            if (s.Checkpoint is not null) Checkpoint(s.Seq, s.Checkpoint);
            else MaybeSnapshot(SnapshotEvery);
            Produce();
        });
    }

    /// <summary>A stored batch's progress for the coordinator (its metrics and samples went with it into the journal: <see cref="StoreGroup"/>).</summary>
    private void Report(Made s)
    {
        if (guard is null && s.Metrics is { } m && m.TryGetValue("classes", out var classes) && classes < spec!.Guard.MinClasses)
            Log.Warning("{0}: batch {1} covers only {2} classes (generator collapse?)", Id, s.Seq, classes);
        var slow = plan!.UnitsPerBatch > 1;
        // as often as the student reports, and the first and last: status shows both sides of the pipeline at one moment
        if (s.Seq % 5 == 0 || s.Seq == 1 || s.Seq >= TotalBatches || slow)
            Services.Coordinator.Tell(new EntityProgress(RunId, Id, s.Seq, TotalBatches, wanted.Count, State.Pool.Count, null, Services.NodeName, null, rollbacks));
        if (slow) Log.Info("{0}: batch {1} of {2} made (best loss {3:F4})", Id, s.Seq, TotalBatches, s.Metrics?.GetValueOrDefault("best_loss") ?? double.NaN);
    }

    /// <summary>Stores the state the compute thread saved right after batch seq.</summary>
    private void Checkpoint(long seq, byte[] bytes)
    {
        var written = Stopwatch.StartNew();
        var blob = OwnBlobs.Put(bytes);
        var old = State.Checkpoints;
        Persist(new CheckpointWritten(seq * plan!.UnitsPerBatch, seq, blob, null, 0), e =>
        {
            NodeMetrics.CheckpointSeconds.WithLabels(EntityKinds.Generator).Observe(written.Elapsed.TotalSeconds);
            State = State.Apply(e);
            DeleteDroppedCheckpoints(old);
            MaybeSnapshot(SnapshotEvery);
        });
    }

    private void OnRelease(ReleaseBatches m)
    {
        if (spec is null) return;
        releasedBy[m.Student] = Math.Max(releasedBy.GetValueOrDefault(m.Student), m.UpToSeq);
        if (SourceDecisions.ReleaseUpTo(releasedBy, spec.Cluster.Replicas, State.ReleasedUpTo) is not { } upTo) return;
        var gone = State.Pool.Where(kv => kv.Key <= upTo).Select(kv => kv.Value).ToList();
        Persist(new BatchesReleased(upTo), e =>
        {
            State = State.Apply(e);
            Unhold(upTo);
            foreach (var b in gone) DeleteBlobs(b);
            MaybeSnapshot(SnapshotEvery);
        });
    }

    private TensorPayload Load(string blob) => MessagePackSerializer.Deserialize<TensorPayload>(OwnBlobs.Get(blob));

    /// <summary>Writes a payload as a blob of this source's (idempotent); its name.</summary>
    private string Put(TensorPayload p) => OwnBlobs.Put(MessagePackSerializer.Serialize(p));

    /// <summary>A batch to the student that asked: straight to it when it carries what the objective needs, else through the teacher.</summary>
    private void SendBatch(string student, long seq, TensorPayload images, TensorPayload? soft, TensorPayload? trueLabels)
    {
        if (soft is null && labelTemperature is { } t)
        {
            Services.Teachers.Tell(new LabelBatch(EntityId.Teacher(RunId), seq, images, student, trueLabels, t));
            return;
        }
        Services.SendToStudent(new LabelledBatch(student, seq, images, soft, labelTemperature ?? 1, trueLabels), endpoints.GetValueOrDefault(student));
    }

    private void DeleteBlobs(BatchStored b)
    {
        OwnBlobs.Delete(b.Blob);
        if (b.LabelsBlob is { } lb) OwnBlobs.Delete(lb);
        if (b.TrueLabelsBlob is { } tb) OwnBlobs.Delete(tb);
    }
}
