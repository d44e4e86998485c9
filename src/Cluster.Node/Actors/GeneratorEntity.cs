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
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using MessagePack;

namespace Cluster.Node.Actors;

/// <summary>
/// A run's DAFL generator (sharded entity "run/generator/0"). It synthesises batches on demand
/// only (students pull, so memory stays bounded), stores each batch as a blob and journals it
/// before anyone sees it, and re-serves stored batches to a student that asks again after a
/// failover, so no batch is lost or trained twice. A new batch goes to the students labelled with
/// the teacher's logits from its own synthesis step, and a re-served one with the labels it was
/// first sent with (the teacher entity labels only a stored batch without them). Its weights, optimiser and RNG are
/// checkpointed; after a restart it replays the steps since its checkpoint so that its next batch
/// is the one an uninterrupted run would have produced.
/// </summary>
public sealed class GeneratorEntity : PersistentEntity
{
    public static Props GetProps(string entityId, NodeServices services) => Props.Create(() => new GeneratorEntity(entityId, services));

    /// <summary>A new batch; Checkpoint holds the generator's state right after it when one is due.</summary>
    private sealed record Synthesized(long Seq, TensorPayload Images, TensorPayload Labels, IReadOnlyDictionary<string, double>? Metrics, byte[]? Checkpoint)
        : INoSerializationVerificationNeeded;
    private sealed record Replayed(long Steps, int Identical) : INoSerializationVerificationNeeded;
    private sealed record EngineReady(DaflSynthesizer Synthesizer, Classifier Teacher, long RestoredStep, string? Warning) : INoSerializationVerificationNeeded;

    private RunSpec? spec;
    private DaflSynthesizer? synth;
    private Classifier? teacher;
    private bool busy;
    /// <summary>Highest batch synthesised, journaled or not (the next synthesis may start while the last one is being journaled).</summary>
    private long synthesized;
    /// <summary>Sequence numbers asked for and not produced yet, with who asked.</summary>
    private readonly SortedDictionary<long, HashSet<string>> wanted = [];
    /// <summary>Journal events (one per batch) between Akka snapshots of the pool.</summary>
    private const int SnapshotEvery = 200;
    private readonly Dictionary<string, long> releasedBy = [];

    public GeneratorEntity(string entityId, NodeServices services) : base(entityId, services)
    {
        Command<StartEntity>(OnStart);
        Command<RequestBatches>(OnRequest);
        Command<ReleaseBatches>(OnRelease);
        Command<EngineReady>(OnEngineReady);
        Command<Synthesized>(OnSynthesized);
        Command<Replayed>(r =>
        {
            busy = false;
            Log.Info("{0}: replayed {1} generator steps after restart ({2} of them reproduced the stored batch bit for bit)", Id, r.Steps, r.Identical);
            Produce();
        });
        Command<Status.Failure>(f => Fail($"generator failed: {f.Cause.Message}"));
        Command<GetEntityStatus>(_ => Sender.Tell(new EntityStatus(Id, State.Started, synth?.Step ?? 0, State.Produced, wanted.Count,
            State.Pool.Count, Services.NodeName, State.Finished ? "finished" : busy ? "synthesising" : "idle")));
        Command<StopEntity>(_ => Finish());
    }

    protected override void OnRecovered()
    {
        if (State.Started && !State.Finished) StartEngine();
    }

    private string RunId => State.RunId!;

    private long CheckpointEvery => spec!.Cluster.GeneratorCheckpointEvery > 0 ? spec.Cluster.GeneratorCheckpointEvery
        : spec.Cluster.CheckpointEvery > 0 ? spec.Cluster.CheckpointEvery : spec.Dafl!.EvalEvery;

    private void OnStart(StartEntity m)
    {
        if (State.Started) return;
        if (m.TeacherBlob is null) { Sender.Tell(new EntityFailed(m.RunId, Id, "a generator needs the trained teacher")); return; }
        Persist(new EntityStarted(m.RunId, m.SpecYaml, m.TeacherBlob), e =>
        {
            State = State.Apply(e);
            StartEngine();
        });
    }

    /// <summary>Builds the synthesiser off the mailbox: load the teacher, restore the newest good checkpoint.</summary>
    private void StartEngine()
    {
        try { spec = EngineAccess.ParseSpec(State.SpecYaml!, RunId); }
        catch (Exception e) { Fail($"spec unusable on this node: {e.Message}"); return; }
        if (spec.Dafl is null) { Fail($"method {spec.Method} has no generator"); return; }
        busy = true;
        var s = spec;
        var st = State;
        EngineAccess.Compute(() =>
        {
            var device = EngineAccess.DeviceFor(s);
            var data = Services.Data(s.Data);
            var t = EngineAccess.LoadModel(s.Teacher!.Arch, data, s.Data.ImageSize, Services.Blobs.Get(st.TeacherBlob!), device);
            var g = EngineAccess.Seeded(s.Seed, () => new DaflSynthesizer(t, s.Dafl!, device, s.Seed));
            var (step, warning) = Checkpoints.RestoreNewest(st.Checkpoints, Services.Blobs, g.LoadState, RunId, Id);
            return new EngineReady(g, t, step, warning);
        }).PipeTo(Self);
    }

    private void OnEngineReady(EngineReady r)
    {
        synth = r.Synthesizer;
        teacher = r.Teacher;
        if (r.Warning is not null) { Log.Error(r.Warning); Services.Coordinator.Tell(new EntityProgress(RunId, Id, synth.Step, spec!.Dafl!.Steps, 0, State.Pool.Count, null, Services.NodeName, r.Warning)); }
        Log.Info("{0}: generator ready at step {1}, {2} batches produced, {3} in the pool", Id, synth.Step, State.Produced, State.Pool.Count);
        if (synth.Step < State.Produced)
        {
            // batches after the checkpoint are stored already: replay those steps without emitting
            var from = synth.Step;
            var upTo = State.Produced;
            var pool = State.Pool;
            var g = synth;
            EngineAccess.Compute(() =>
            {
                var identical = 0;
                while (g.Step < upTo)
                {
                    using var o = g.Synthesize(false);
                    if (pool.TryGetValue(g.Step, out var stored) && BlobStoreHash(o) == stored.Blob) identical++;
                }
                return new Replayed(upTo - from, identical);
            }).PipeTo(Self);
            return;
        }
        busy = false;
        Produce();
    }

    private static string BlobStoreHash(SynthesisOutput o) =>
        Storage.BlobStore.Hash(MessagePackSerializer.Serialize(TensorWire.ToPayload(o.Images)));

    private void OnRequest(RequestBatches m)
    {
        if (!State.Started) { Log.Warning("{0}: batches requested before the run started; ignored (the student asks again)", Id); return; }
        for (var seq = m.FromSeq; seq < m.FromSeq + m.Count && seq <= spec!.Dafl!.Steps; seq++)
        {
            if (seq <= State.ReleasedUpTo)
            {
                Log.Warning("{0}: {1} asked for batch {2}, which every student had checkpointed past; not resent", Id, m.ReplyTo, seq);
                continue;
            }
            if (State.Pool.TryGetValue(seq, out var stored))
            {
                // stored already (a student came back from a checkpoint): the same batch again, with
                // the same labels, never a new one (the teacher labels one stored without its labels)
                var images = Load(stored.Blob);
                if (stored.LabelsBlob is { } lb) SendLabelled(m.ReplyTo, seq, images, Load(lb));
                else SendToTeacher(seq, images, m.ReplyTo);
                continue;
            }
            if (!wanted.TryGetValue(seq, out var who)) wanted[seq] = who = [];
            who.Add(m.ReplyTo);
        }
        Produce();
    }

    /// <summary>Synthesises the next batch if a student is waiting for one. One at a time, in order.</summary>
    private void Produce()
    {
        if (busy || synth is null || State.Finished || wanted.Count == 0) return;
        synthesized = Math.Max(synthesized, State.Produced);
        var next = synthesized + 1;
        // (a wanted batch below `next` is synthesised and being journaled: its journal callback sends it)
        if (wanted.Keys.Last() < next) return;
        busy = true;
        var g = synth;
        var wantMetrics = next % 50 == 0;
        var checkpointDue = next % CheckpointEvery == 0 || next == spec!.Dafl!.Steps;
        var labelDType = TensorWire.Parse(spec!.Cluster.SoftLabels);
        EngineAccess.Compute(() =>
        {
            using var o = g.Synthesize(wantMetrics);
            var images = TensorWire.ToPayload(o.Images);
            // the step ran the teacher on exactly this batch (DAFL's loss needs its logits): label
            // from those, as the engine loop does, rather than a second teacher pass
            using var probs = SoftLabels.FromLogits(o.TeacherLogits, TeacherEntity.Temperature);
            var labels = TensorWire.ToPayload(probs, labelDType);
            var checkpoint = checkpointDue ? EngineAccess.Save(g.SaveState) : null;
            return new Synthesized(next, images, labels, o.Metrics, checkpoint);
        }).PipeTo(Self);
    }

    private void OnSynthesized(Synthesized s)
    {
        // the batch is on disk and journaled before any student can see it
        var blob = Store(s.Images);
        var labelsBlob = Store(s.Labels);
        synthesized = s.Seq;
        var checkpoint = s.Checkpoint is not null;
        if (!checkpoint)
        {
            // the next synthesis overlaps this batch's journal write (its result waits for the write)
            busy = false;
            Produce();
        }
        Persist(new BatchStored(s.Seq, blob, labelsBlob), e =>
        {
            State = State.Apply(e);
            if (checkpoint) busy = false;
            if (wanted.Remove(s.Seq, out var who))
                foreach (var student in who) SendLabelled(student, s.Seq, s.Images, s.Labels);
            if (s.Metrics is { } m && m.TryGetValue("classes", out var classes) && classes < spec!.Guard.MinClasses)
                Log.Warning("{0}: batch {1} covers only {2} classes (generator collapse?)", Id, s.Seq, classes);
            if (s.Seq % 25 == 0)
                Services.Coordinator.Tell(new EntityProgress(RunId, Id, synth!.Step, spec!.Dafl!.Steps, wanted.Count, State.Pool.Count, null, Services.NodeName, null));
            if (checkpoint) Checkpoint(s.Seq, s.Checkpoint!);
            else MaybeSnapshot(SnapshotEvery);
            Produce();
        });
    }

    /// <summary>Stores the state the compute thread saved right after batch seq (step seq).</summary>
    private void Checkpoint(long seq, byte[] bytes)
    {
        var blob = Services.Blobs.Put(bytes);
        var old = State.Checkpoints;
        Persist(new CheckpointWritten(seq, seq, blob, null, 0), e =>
        {
            State = State.Apply(e);
            foreach (var gone in old.Where(c => !State.Checkpoints.Contains(c) && State.Checkpoints.All(k => k.Blob != c.Blob))) Services.Blobs.Delete(gone.Blob);
            MaybeSnapshot(SnapshotEvery);
        });
    }

    private void OnRelease(ReleaseBatches m)
    {
        if (spec is null) return;
        releasedBy[m.Student] = Math.Max(releasedBy.GetValueOrDefault(m.Student), m.UpToSeq);
        if (releasedBy.Count < spec.Cluster.Replicas) return;
        var upTo = releasedBy.Values.Min();
        if (upTo <= State.ReleasedUpTo) return;
        var gone = State.Pool.Where(kv => kv.Key <= upTo).Select(kv => kv.Value).ToList();
        Persist(new BatchesReleased(upTo), e =>
        {
            State = State.Apply(e);
            foreach (var b in gone) DeleteBlobs(b);
            MaybeSnapshot(SnapshotEvery);
        });
    }

    private string Store(TensorPayload p) => Services.Blobs.Put(MessagePackSerializer.Serialize(p));

    private TensorPayload Load(string blob) => MessagePackSerializer.Deserialize<TensorPayload>(Services.Blobs.Get(blob));

    private void SendLabelled(string student, long seq, TensorPayload images, TensorPayload labels) =>
        Services.Students.Tell(new LabelledBatch(student, seq, images, labels, TeacherEntity.Temperature));

    private void DeleteBlobs(BatchStored b)
    {
        Services.Blobs.Delete(b.Blob);
        if (b.LabelsBlob is { } lb) Services.Blobs.Delete(lb);
    }

    private void SendToTeacher(long seq, TensorPayload images, string student) =>
        Services.Teachers.Tell(new LabelBatch(Contracts.EntityId.Teacher(RunId), seq, images, student));

    private void Fail(string reason)
    {
        busy = false;
        ReportFailure(reason);
    }

    private void Finish()
    {
        if (State.Finished) { Context.Parent.Tell(new Passivate(PoisonPill.Instance)); return; }
        var pool = State.Pool.Values.ToList();
        Persist(new EntityFinished(synth?.Step ?? 0), e =>
        {
            State = State.Apply(e);
            foreach (var b in pool) DeleteBlobs(b);
            Context.Parent.Tell(new Passivate(PoisonPill.Instance));
        });
    }

    protected override void PostStop()
    {
        var (g, t) = (synth, teacher);
        EngineAccess.Release(() => { g?.Dispose(); t?.Dispose(); });
        base.PostStop();
    }
}
