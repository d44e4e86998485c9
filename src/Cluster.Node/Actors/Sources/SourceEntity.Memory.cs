using Akka.Event;
using Cluster.Contracts.Events;
using Cluster.Node.Storage;
using static Cluster.Node.Actors.SourceJobs;

namespace Cluster.Node.Actors;

/// <summary>
/// Batches held in memory until released: a batch the source can make again is journaled (its
/// blobs' names) before it is sent, but its bytes stay here instead of going to disk, so the node
/// spends nothing on writing, flushing and deleting files for a batch that is released seconds
/// later. Beyond `cluster.batch_memory_mb` the oldest are written (then served from disk), and a
/// stop the node chooses writes them all. A crash loses what was held: catching up refills those
/// made after the checkpoint, and the rebuilder makes the others again when a student asks
/// (<see cref="BatchStored.Held"/>).
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
            try { WriteBlobs(b); }
            catch (Exception e) when (e is IOException or BlobException or UnauthorizedAccessException)
            {
                Fail($"batch {old} could not be written when memory for held batches ran short: {e.Message}");
                return;
            }
            held.Remove(old);
            heldBytes -= b.Bytes;
        }
    }

    /// <summary>
    /// A stop the node chose (Ctrl+C, SIGTERM, a shard handed off) writes the batches still held, so
    /// that the source, started again, serves them from disk instead of making them again beside its
    /// own work (a resume with a full pool was 3-4x slower until the rebuilder had caught up). A kill
    /// leaves them to the rebuilder, as before.
    /// </summary>
    private void WriteHeld()
    {
        var written = 0;
        foreach (var (seq, b) in held)
        {
            try
            {
                WriteBlobs(b);
                written++;
            }
            catch (Exception e) when (e is IOException or BlobException or UnauthorizedAccessException)
            {
                Log.Warning("{0}: stopping, batch {1} held in memory could not be written ({2}); it will be made again if asked for", Id, seq, e.Message);
                break;
            }
        }
        if (written > 0) Log.Info("{0}: stopping: wrote the {1} batch(es) held in memory, for a restart to serve", Id, written);
        held.Clear();
        heldBytes = 0;
    }

    /// <summary>A held batch's blobs written under the names its journal entry gives them (content hashes).</summary>
    private void WriteBlobs(HeldBatch b)
    {
        Put(b.Images);
        if (b.SoftLabels is { } soft) Put(soft);
        if (b.TrueLabels is { } trueLabels) Put(trueLabels);
    }

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
}
