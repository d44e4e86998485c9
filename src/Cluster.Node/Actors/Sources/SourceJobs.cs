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
    /// <summary>
    /// The source built and caught up; CanRollBack: whether the guard may take it back (<see cref="IBatchSource.CanRollBack"/>);
    /// Refilled: held batches whose blobs were never written, made again bit for bit while catching up.
    /// </summary>
    public sealed record Ready(IBatchSource Source, Classifier? Teacher, BatchPlan Plan, string? Warning, long Replayed, int Identical, bool CanRollBack,
        IReadOnlyDictionary<long, HeldBatch> Refilled) : INoSerializationVerificationNeeded;

    /// <summary>A batch's payloads as they go on the wire, kept in memory until released (<see cref="BatchStored.Held"/>).</summary>
    public sealed record HeldBatch(TensorPayload Images, TensorPayload? SoftLabels, TensorPayload? TrueLabels)
    {
        public long Bytes => Images.Data.Length + (SoftLabels?.Data.Length ?? 0) + (TrueLabels?.Data.Length ?? 0);
    }

    /// <summary>
    /// A batch made, its blobs staged, or only named where Held (kept in memory, <see cref="BatchStored.Held"/>);
    /// Checkpoint: the source's state right after it, when due.
    /// </summary>
    public sealed record Made(long Seq, TensorPayload Images, TensorPayload? SoftLabels, TensorPayload? TrueLabels,
        StagedBlob ImagesBlob, StagedBlob? SoftLabelsBlob, StagedBlob? TrueLabelsBlob, bool Held,
        IReadOnlyDictionary<string, double>? Metrics, byte[]? Checkpoint, byte[]? SamplesPng) : INoSerializationVerificationNeeded;

    /// <summary>Part of batch Seq done (a checkpoint of it when due); SecondsPerUnit sizes the next job.</summary>
    public sealed record Advanced(long Seq, int UnitsDone, byte[]? Checkpoint, double SecondsPerUnit) : INoSerializationVerificationNeeded;

    /// <summary>The student weights batch Seq competes with could not be read; it waits for them again.</summary>
    public sealed record CompetitorUnreadable(long Seq, string Reason) : INoSerializationVerificationNeeded;

    /// <summary>What the mailbox decided about the next job; Hold: the batch stays in memory, its blobs only named.</summary>
    public sealed record WorkOrder(long Next, long TotalBatches, int UnitsPerBatch, int Units, long CheckpointEvery, bool WantMetrics,
        string? CompetitorBlob, double? LabelTemperature, WireDType LabelDType, int Grid, string Dataset, bool Hold);

    /// <summary>Loads the teacher (when the source uses it; a lost blob from a verified copy, <see cref="TeacherCopies"/>), builds the source, restores its newest good checkpoint and catches up to the batches stored.</summary>
    public static Ready Start(RunSpec s, DataSplits data, string? teacherBlob, IReadOnlyList<string> teacherCopies, ImmutableList<CheckpointWritten> checkpoints,
        ImmutableSortedDictionary<long, BatchStored> pool, long produced, BlobStore blobs, BlobStore own)
    {
        string? restored = null;
        var t = teacherBlob is null ? null : EngineAccess.LoadModel(s.Method.TeacherOf(s)!.Arch, data, s.Data.ImageSize, TeacherCopies.Read(blobs, teacherBlob, teacherCopies, out restored), EngineAccess.DeviceFor(s));
        var source = Create(s, data, t);
        var warning = Restore(source, checkpoints.Where(c => c.Seq <= produced).ToImmutableList(), own);
        var identical = 0;
        var refilled = new Dictionary<long, HeldBatch>();
        var (temperature, dtype) = (s.Method.Objective(s).SoftLabelTemperature, TensorWire.Parse(s.Cluster.SoftLabels));
        // batches after the checkpoint are stored already: made again without being sent, and held
        // again where they were held and never written
        var replayed = source.CatchUp(produced, (seq, o) =>
        {
            if (!pool.TryGetValue(seq, out var stored)) return;
            if (stored.Held && !own.Exists(stored.Blob))
            {
                // one that differs (a device that does not replay bit for bit) is left to the rebuilder, which journals it anew
                var (images, soft, trueLabels) = Payloads(o, temperature, dtype);
                if (Name(images) != stored.Blob || Name(soft) != stored.LabelsBlob || Name(trueLabels) != stored.TrueLabelsBlob) return;
                identical++;
                refilled[seq] = new HeldBatch(images, soft, trueLabels);
            }
            else if (Name(TensorWire.ToPayload(o.Images)) == stored.Blob) identical++;
        });
        var said = restored is null ? warning : warning is null ? restored : $"{restored}; {warning}";
        return new Ready(source, t, s.Method.Plan(s, data.TrainX.shape[0]), said, replayed, identical, source.CanRollBack, refilled);
    }

    /// <summary>The method's source as the seed makes it, before any batch.</summary>
    private static IBatchSource Create(RunSpec s, DataSplits data, Classifier? teacher)
    {
        var device = EngineAccess.DeviceFor(s);
        return EngineAccess.Seeded(s.Seed, () => s.Method.CreateBatchSource(new SourceContext(s, data, device, teacher, () => EngineAccess.NewStudent(s, data, device))));
    }

    /// <summary>
    /// Restores the newest usable of `candidates`, falling back to older ones, but never to one
    /// before the newest guard rollback among them: replay from there would miss the rollback, so
    /// the source would make other batches than the ones it made (<see cref="CheckpointWritten.Rollback"/>).
    /// </summary>
    private static string? Restore(IBatchSource source, ImmutableList<CheckpointWritten> candidates, BlobStore own)
    {
        var floor = candidates.LastOrDefault(c => c.Rollback);
        var (step, warning) = Checkpoints.RestoreNewest(floor is null ? candidates : candidates.RemoveAll(c => c.Seq < floor.Seq), own, source.LoadState);
        if (floor is not null && step == 0)
            throw new InvalidDataException($"no checkpoint from the guard's rollback at batch {floor.Seq} on is usable ({warning}); the batches after it cannot be made as they were");
        return warning;
    }

    /// <summary>The source after the guard's rollback at batch Seq: its whole state, to journal with that batch as the checkpoint after it (null: going back failed, see Reason).</summary>
    public sealed record RolledBack(long Seq, byte[]? Checkpoint, string Reason, string From) : INoSerializationVerificationNeeded;

    /// <summary>
    /// The guard's rollback (<see cref="IBatchSource.RollBack"/>) of the source that made batch
    /// `seq`: to what it had learned at checkpoint `target`, or at its start (a source made afresh
    /// from the seed) when there is none.
    /// </summary>
    public static RolledBack RollBack(IBatchSource src, long seq, CheckpointWritten? target, BlobStore own, RunSpec s, DataSplits data, Classifier? teacher, string reason)
    {
        byte[] state;
        if (target is not null) state = own.Get(target.Blob);
        else using (var fresh = Create(s, data, teacher)) state = EngineAccess.Save(fresh.SaveState);
        using (var r = new BinaryReader(new MemoryStream(state))) src.RollBack(r, s.Guard.LrFactor);
        return new RolledBack(seq, EngineAccess.Save(src.SaveState), reason, target is null ? "its initial weights" : $"its weights after batch {target.Seq}");
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
        var (images, soft, trueLabels) = Payloads(b, o.LabelTemperature, o.LabelDType);
        return new Made(o.Next, images, soft, trueLabels, stager.Stage(images, o.Hold), soft is null ? null : stager.Stage(soft, o.Hold),
            trueLabels is null ? null : stager.Stage(trueLabels, o.Hold), o.Hold, b.Metrics, checkpoint, png);
    }

    /// <summary>The name (blob hash) a payload has or would have in the blob store.</summary>
    public static string? Name(TensorPayload? p) => p is null ? null : BlobStore.Hash(MessagePackSerializer.Serialize(p));

    /// <summary>A batch as it goes on the wire: images, the teacher's probabilities where the source has them, the data's labels.</summary>
    private static (TensorPayload Images, TensorPayload? Soft, TensorPayload? TrueLabels) Payloads(SourceBatch b, double? labelTemperature, WireDType labelDType)
    {
        var images = TensorWire.ToPayload(b.Images);
        var trueLabels = b.Labels is { } y ? TensorWire.LabelsToPayload(y) : null;
        // a source that computed the teacher's probabilities, or ran the teacher on exactly this
        // batch (DAFL's loss needs its logits), labels from those, as the engine loop does
        TensorPayload? soft = null;
        if (b.TeacherProbabilities is { } probs) soft = TensorWire.ToPayload(probs, labelDType);
        else if (labelTemperature is { } t && b.TeacherLogits is { } logits)
            using (var p = SoftLabels.FromLogits(logits, t)) soft = TensorWire.ToPayload(p, labelDType);
        return (images, soft, trueLabels);
    }

    /// <summary>A second source, restored from the newest checkpoint before batch Target (or made afresh from the seed), at batch Made.</summary>
    public sealed record RebuilderReady(IBatchSource Source, long Made, string? Warning) : INoSerializationVerificationNeeded;

    /// <summary>Batch Seq made again by the rebuilder.</summary>
    public sealed record Rebuilt(long Seq, TensorPayload Images, TensorPayload? SoftLabels, TensorPayload? TrueLabels, double SecondsPerUnit)
        : INoSerializationVerificationNeeded;

    /// <summary>The rebuilder is at batch Made, short of its target.</summary>
    public sealed record RebuildAdvanced(long Made, double SecondsPerUnit) : INoSerializationVerificationNeeded;

    /// <summary>
    /// Builds a second source as <see cref="Start"/> builds the first, restored from the newest of
    /// the source's checkpoints that comes before batch `target` (none: from the seed). Replay from
    /// there is deterministic, so it makes the batches it is asked for again, bit for bit.
    /// </summary>
    public static RebuilderReady OpenRebuilder(IBatchSource? old, RunSpec s, DataSplits data, Classifier? teacher,
        ImmutableList<CheckpointWritten> checkpoints, BlobStore own, long target)
    {
        old?.Dispose();
        var source = Create(s, data, teacher);
        var warning = Restore(source, checkpoints.Where(c => c.Seq < target).ToImmutableList(), own);
        return new RebuilderReady(source, source.Made, warning);
    }

    /// <summary>
    /// Up to `units` units of the rebuilder's work towards batch `target`: the batch once made, else
    /// how far it got. Rounds that do not depend on each other skip to the round before the target;
    /// a stepwise source replays its steps.
    /// </summary>
    public static object Rebuild(IBatchSource src, long target, int units, bool skipsRounds, double? labelTemperature, WireDType labelDType)
    {
        if (skipsRounds && src.Made < target - 1) src.CatchUp(target - 1, null);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (var i = 0; i < units; i++)
        {
            if (src.Advance(wantMetrics: false) is not { } b) continue;
            using (b)
            {
                if (src.Made < target) continue;
                var (images, soft, trueLabels) = Payloads(b, labelTemperature, labelDType);
                return new Rebuilt(target, images, soft, trueLabels, clock.Elapsed.TotalSeconds / (i + 1));
            }
        }
        return new RebuildAdvanced(src.Made, clock.Elapsed.TotalSeconds / Math.Max(1, units));
    }
}

/// <summary>
/// Serialises and hashes a batch's blobs on the compute thread, right after the batch is made (0.5
/// MB of copying and SHA-256 per DAFL quick batch cost the pipeline ~3% on the actor threads beside
/// the compute thread's OpenMP team), and writes them under temporary names unless the batch is
/// held in memory. The mailbox commits them; the ones never committed are discarded when the
/// entity stops.
/// </summary>
internal sealed class Stager(BlobStore blobs)
{
    private readonly ArrayBufferWriter<byte> buffer = new(1 << 20);   // compute thread only: an entity's jobs never overlap
    private readonly HashSet<StagedBlob> uncommitted = [];

    /// <summary>Writes the payload under a temporary name, or only names it where it is to be held in memory (nothing to commit).</summary>
    public StagedBlob Stage(TensorPayload p, bool nameOnly = false)
    {
        buffer.ResetWrittenCount();
        MessagePackSerializer.Serialize(buffer, p);
        if (nameOnly) return new StagedBlob(BlobStore.Hash(buffer.WrittenSpan), null);
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
