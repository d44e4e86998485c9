using Akka.Event;
using Cluster.Contracts.Events;
using Cluster.Node.Storage;
using MessagePack;
using static Cluster.Node.Actors.SourceJobs;

namespace Cluster.Node.Actors;

/// <summary>
/// Batches held in memory until released: a batch the source can make again is journaled (its
/// blobs' names) before it is sent, but its bytes stay here instead of going to disk, so the node
/// spends nothing on writing, flushing and deleting files for a batch that is released seconds
/// later. Beyond `cluster.batch_memory_mb` the oldest are written (then served from disk). A
/// restart loses what was held: catching up refills those made after the checkpoint, and the
/// rebuilder makes the others again when a student asks (<see cref="BatchStored.Held"/>).
/// </summary>
public sealed partial class SourceEntity
{
    private readonly SortedDictionary<long, HeldBatch> held = [];
    private long heldBytes;

    private void Hold(long seq, HeldBatch batch)
    {
        if (held.Remove(seq, out var before)) heldBytes -= before.Bytes;
        held[seq] = batch;
        heldBytes += batch.Bytes;
        var limit = (long)spec!.Cluster.BatchMemoryMb << 20;
        if (heldBytes <= limit) return;
        foreach (var old in SourceDecisions.ToWrite(held.Select(h => (h.Key, h.Value.Bytes)), limit))
        {
            var b = held[old];
            try
            {
                Write(b.Images);
                if (b.SoftLabels is { } soft) Write(soft);
                if (b.TrueLabels is { } trueLabels) Write(trueLabels);
            }
            catch (Exception e) when (e is IOException or BlobException or UnauthorizedAccessException)
            {
                Fail($"batch {old} could not be written when memory for held batches ran short: {e.Message}");
                return;
            }
            held.Remove(old);
            heldBytes -= b.Bytes;
        }
    }

    private void Write(Contracts.Tensors.TensorPayload p) => OwnBlobs.Put(MessagePackSerializer.Serialize(p));

    private void Unhold(long upTo)
    {
        foreach (var seq in held.Keys.TakeWhile(k => k <= upTo).ToList())
        {
            heldBytes -= held[seq].Bytes;
            held.Remove(seq);
        }
    }

    /// <summary>
    /// Holds again the batches the catch-up after a restart made again, those still in the pool
    /// (a release may have been journaled meanwhile), and serves the students that asked for them
    /// before the source was ready, instead of making them a second time.
    /// </summary>
    private void Refill(IReadOnlyDictionary<long, HeldBatch> refilled)
    {
        foreach (var (seq, batch) in refilled)
        {
            if (!State.Pool.ContainsKey(seq)) continue;
            Hold(seq, batch);
            lost.Remove(seq);
            if (toRebuild.Remove(seq, out var who))
                foreach (var student in who) SendBatch(student, seq, batch.Images, batch.SoftLabels, batch.TrueLabels);
        }
    }

    /// <summary>Holds a batch made again in place of a held one whose bytes were lost; journals it again if it differs.</summary>
    private bool HoldAgain(BatchStored stored, Rebuilt r)
    {
        if (!stored.Held || spec!.Cluster.BatchMemoryMb == 0 || r.SoftLabels is null && stored.LabelsBlob is not null) return false;
        var again = new BatchStored(r.Seq, Name(r.Images)!, Name(r.SoftLabels) ?? stored.LabelsBlob, Name(r.TrueLabels), Held: true);
        var batch = new HeldBatch(r.Images, r.SoftLabels, r.TrueLabels);
        if (again == stored)
        {
            Hold(r.Seq, batch);
            return true;
        }
        Log.Warning("{0}: batch {1} made again differs from the one stored (images {2} vs {3}); the pool keeps the new one", Id, r.Seq, again.Blob[..12], stored.Blob[..12]);
        Persist(again, e =>
        {
            State = State.Apply(e);
            Hold(r.Seq, batch);
        });
        return true;
    }
}
