using System.Buffers;
using System.Collections.Immutable;
using Akka.Actor;
using Cluster.Contracts.Events;
using Cluster.Contracts.Tensors;
using Cluster.Node.Hosting;
using Cluster.Node.Storage;
using Distill.Engine.Imaging;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using MessagePack;

namespace Cluster.Node.Actors;

/// <summary>
/// The source entity's compute jobs: each gets its inputs as arguments (the source it owns on the
/// compute thread, what the mailbox decided) and answers with one message.
/// </summary>
internal static class SourceJobs
{
    public sealed record Ready(IBatchSource Source, Classifier? Teacher, BatchPlan Plan, string? Warning, long Replayed, int Identical)
        : INoSerializationVerificationNeeded;

    /// <summary>A batch made, its blobs staged; Checkpoint: the source's state right after it, when due.</summary>
    public sealed record Made(long Seq, TensorPayload Images, TensorPayload? SoftLabels, TensorPayload? TrueLabels,
        StagedBlob ImagesBlob, StagedBlob? SoftLabelsBlob, StagedBlob? TrueLabelsBlob,
        IReadOnlyDictionary<string, double>? Metrics, byte[]? Checkpoint, byte[]? SamplesPng) : INoSerializationVerificationNeeded;

    /// <summary>Part of batch Seq done (a checkpoint of it when due); SecondsPerUnit sizes the next job.</summary>
    public sealed record Advanced(long Seq, int UnitsDone, byte[]? Checkpoint, double SecondsPerUnit) : INoSerializationVerificationNeeded;

    /// <summary>The student weights batch Seq competes with could not be read; it waits for them again.</summary>
    public sealed record CompetitorUnreadable(long Seq, string Reason) : INoSerializationVerificationNeeded;

    /// <summary>What the mailbox decided about the next job.</summary>
    public sealed record WorkOrder(long Next, long TotalBatches, int UnitsPerBatch, int Units, long CheckpointEvery, bool WantMetrics,
        string? CompetitorBlob, double? LabelTemperature, WireDType LabelDType, int Grid, string Dataset);

    /// <summary>Loads the teacher (when the source uses it), builds the source, restores its newest good checkpoint and catches up to the batches stored.</summary>
    public static Ready Start(RunSpec s, DataSplits data, string? teacherBlob, ImmutableList<CheckpointWritten> checkpoints,
        ImmutableSortedDictionary<long, BatchStored> pool, long produced, BlobStore blobs, BlobStore own, string runId, string id)
    {
        var device = EngineAccess.DeviceFor(s);
        var t = teacherBlob is null ? null : EngineAccess.LoadModel(s.Method.TeacherOf(s)!.Arch, data, s.Data.ImageSize, blobs.Get(teacherBlob), device);
        var source = EngineAccess.Seeded(s.Seed, () => s.Method.CreateBatchSource(new SourceContext(s, data, device, t, () => EngineAccess.NewStudent(s, data, device))));
        var (_, warning) = Checkpoints.RestoreNewest(checkpoints.Where(c => c.Seq <= produced).ToImmutableList(), own, source.LoadState, runId, id);
        var identical = 0;
        // batches after the checkpoint are stored already: made again without being sent
        var replayed = source.CatchUp(produced, (seq, o) =>
        {
            if (pool.TryGetValue(seq, out var stored) && BlobStore.Hash(MessagePackSerializer.Serialize(TensorWire.ToPayload(o.Images))) == stored.Blob) identical++;
        });
        return new Ready(source, t, s.Method.Plan(s, data.TrainX.shape[0]), warning, replayed, identical);
    }

    /// <summary>Up to o.Units units of work on batch o.Next: the batch when it is finished, else how far it got.</summary>
    public static object Work(IBatchSource src, WorkOrder o, BlobStore blobs, Stager stager)
    {
        if (o.CompetitorBlob is { } blob)
        {
            // read here, off the mailbox: a student's model can be large
            try { src.CompeteWith(blobs.Get(blob)); }
            catch (BlobException e) { return new CompetitorUnreadable(o.Next, e.Message); }
        }
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double PerUnit(int ran) => clock.Elapsed.TotalSeconds / Math.Max(1, ran);
        var before = (o.Next - 1) * o.UnitsPerBatch;
        for (var i = 0; i < o.Units; i++)
        {
            var done = src.Advance(o.WantMetrics);
            if (done is not null)
                using (done)
                {
                    var due = SourceDecisions.CheckpointDue(o.Next * o.UnitsPerBatch, o.CheckpointEvery, o.Next == o.TotalBatches);
                    return Finished(src, done, o, stager, due ? EngineAccess.Save(src.SaveState) : null);
                }
            if (SourceDecisions.CheckpointDue(before + src.UnitsDone, o.CheckpointEvery, false))
                return new Advanced(o.Next, src.UnitsDone, EngineAccess.Save(src.SaveState), PerUnit(i + 1));
        }
        return new Advanced(o.Next, src.UnitsDone, null, PerUnit(o.Units));
    }

    private static Made Finished(IBatchSource src, SourceBatch b, WorkOrder o, Stager stager, byte[]? checkpoint)
    {
        byte[]? png = null;
        if (o.Grid > 0 && src.Samples(o.Grid, b) is { } x)
        {
            var (mean, std, _) = DataSplits.Constants(o.Dataset);
            using (x) png = SampleGrid.ToPng(x, mean, std);
        }
        var images = TensorWire.ToPayload(b.Images);
        var trueLabels = b.Labels is { } y ? TensorWire.LabelsToPayload(y) : null;
        // a source that computed the teacher's probabilities, or ran the teacher on exactly this
        // batch (DAFL's loss needs its logits), labels from those, as the engine loop does
        TensorPayload? soft = null;
        if (b.TeacherProbabilities is { } probs) soft = TensorWire.ToPayload(probs, o.LabelDType);
        else if (o.LabelTemperature is { } t && b.TeacherLogits is { } logits)
            using (var p = SoftLabels.FromLogits(logits, t)) soft = TensorWire.ToPayload(p, o.LabelDType);
        return new Made(o.Next, images, soft, trueLabels, stager.Stage(images), soft is null ? null : stager.Stage(soft),
            trueLabels is null ? null : stager.Stage(trueLabels), b.Metrics, checkpoint, png);
    }
}

/// <summary>
/// Serialises, hashes and writes a batch's blobs under temporary names on the compute thread, right
/// after the batch is made (0.5 MB of copying and SHA-256 per DAFL quick batch cost the pipeline
/// ~3% on the actor threads beside the compute thread's OpenMP team). The mailbox commits them; the
/// ones never committed are discarded when the entity stops.
/// </summary>
internal sealed class Stager(BlobStore blobs)
{
    private readonly ArrayBufferWriter<byte> buffer = new(1 << 20);   // compute thread only: an entity's jobs never overlap
    private readonly HashSet<StagedBlob> uncommitted = [];

    public StagedBlob Stage(TensorPayload p)
    {
        buffer.ResetWrittenCount();
        MessagePackSerializer.Serialize(buffer, p);
        var staged = blobs.Stage(buffer.WrittenSpan);
        lock (uncommitted) uncommitted.Add(staged);
        return staged;
    }

    public string Commit(StagedBlob staged)
    {
        var hash = blobs.Commit(staged);
        lock (uncommitted) uncommitted.Remove(staged);
        return hash;
    }

    /// <summary>Discards what was staged and never committed (on the compute thread, after any job still running).</summary>
    public void DiscardRest()
    {
        lock (uncommitted)
            foreach (var b in uncommitted)
                try { blobs.Discard(b); }
                catch (IOException) { }
    }
}
