using System.Buffers;
using System.Collections.Immutable;
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
using Distill.Engine.Imaging;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using MessagePack;

namespace Cluster.Node.Actors;

/// <summary>
/// A run's source of batches (sharded entity "run/generator/0"): a stepwise source the method's file
/// names (DAFL's generator network, the training set of a real-data method), or DeepInversion /
/// ADI rounds of pixel optimisation (a round is one batch, synthesised in slices of iterations
/// so that other entities' work interleaves, with mid-round checkpoints; ADI waits for the
/// student's weights at the end of the previous round, <see cref="CompetitorReady"/>). It synthesises batches on demand
/// only (students pull, so memory stays bounded), stores each batch as a blob and journals it
/// before anyone sees it (a few at a time where the window allows: <see cref="StoreGroup"/>), and re-serves stored batches to a student that asks again after a
/// failover, so no batch is lost or trained twice. A new batch goes to the students labelled with
/// the teacher's logits from its own synthesis step, and a re-served one with the labels it was
/// first sent with (the teacher entity labels a batch stored without them: real data for KD). A stepwise
/// source's state (DAFL: weights, optimiser and RNG; real data: position and RNG) is checkpointed; after a restart it replays the steps since its checkpoint so that its next batch
/// is the one an uninterrupted run would have produced. DeepInversion: a round's random numbers
/// depend on (seed, round) alone, so only a round in progress needs a checkpoint.
/// </summary>
public sealed class GeneratorEntity : PersistentEntity
{
    public static Props GetProps(string entityId, NodeServices services) => Props.Create(() => new GeneratorEntity(entityId, services));

    /// <summary>A new batch, its blobs staged on the compute thread; Checkpoint holds the generator's state right after it when one is due.</summary>
    /// <summary>SoftLabels: the teacher's probabilities when the source computed its logits; TrueLabels: the data's labels when it has them.</summary>
    private sealed record Synthesized(long Seq, TensorPayload Images, TensorPayload? SoftLabels, TensorPayload? TrueLabels,
        StagedBlob ImagesBlob, StagedBlob? SoftLabelsBlob, StagedBlob? TrueLabelsBlob,
        IReadOnlyDictionary<string, double>? Metrics, byte[]? Checkpoint, byte[]? SamplesPng) : INoSerializationVerificationNeeded;
    /// <summary>Part of a DeepInversion round done (a checkpoint of it when one was due).</summary>
    /// <summary>SecondsPerIteration: as measured by the slice, which sizes the next one.</summary>
    private sealed record Advanced(long Seq, int Iteration, byte[]? Checkpoint, double SecondsPerIteration) : INoSerializationVerificationNeeded;
    /// <summary>ADI: the student's weights for a round could not be read; the round waits for them again.</summary>
    private sealed record CompetitorUnreadable(long Round, string Reason) : INoSerializationVerificationNeeded;
    private sealed record Replayed(long Steps, int Identical) : INoSerializationVerificationNeeded;
    private sealed record EngineReady(IStepSource? Source, RoundSynthesizer? Rounds, Classifier? Competitor, Classifier? Teacher, string? Warning, long TotalBatches)
        : INoSerializationVerificationNeeded;

    /// <summary>
    /// How long a DeepInversion slice should keep the compute thread: the other entities' jobs on
    /// this node (a student's steps, a teacher's labels) wait at most this long, and a slice is long
    /// enough that the hand-over between jobs costs nothing measurable. The number of pixel
    /// iterations per slice follows the measured iteration time (a few on a GPU with a large
    /// model, tens on a CPU with a small one); the result does not depend on it.
    /// </summary>
    public static readonly TimeSpan SliceTarget = TimeSpan.FromMilliseconds(100);
    /// <summary>Iterations in the next slice: one until an iteration has been timed.</summary>
    private int iterationsPerJob = 1;

    private RunSpec? spec;
    /// <summary>A source that makes a batch per step (DAFL's generator, real data), or null: DeepInversion rounds.</summary>
    private IStepSource? synth;
    /// <summary>Batches the run needs (known once the engine is ready: real data counts its batches).</summary>
    private long totalBatches;
    private RoundSynthesizer? rounds;
    /// <summary>ADI: the student model the round in progress competes with.</summary>
    private Classifier? competitor;
    /// <summary>ADI: the student's weights blob for each round it asked for (round 1 competes with the initial student).</summary>
    private readonly Dictionary<long, CompetitorReady> competitors = [];
    /// <summary>DeepInversion: iterations done in the round in progress, as of the last slice.</summary>
    private int roundIteration;
    private Classifier? teacher;
    private bool busy;
    /// <summary>Highest batch synthesised, journaled or not (the next synthesis may start while the last one is being journaled).</summary>
    private long synthesized;
    /// <summary>Sequence numbers asked for and not produced yet, with who asked.</summary>
    private readonly SortedDictionary<long, HashSet<string>> wanted = [];
    /// <summary>Journal events (one per batch) between Akka snapshots of the pool.</summary>
    private const int SnapshotEvery = 200;
    private readonly Dictionary<string, long> releasedBy = [];
    /// <summary>Synthesised batches waiting to be stored with the next one (<see cref="StoreGroup"/>); nobody has seen them.</summary>
    private readonly List<Synthesized> unstored = [];
    /// <summary>
    /// Most batches stored in one group: the window less two. A student then always has two of
    /// its window stored (one training, one next) when the generator reaches the window's end and
    /// stores its group, so its ~5 ms of flush and journal write never leave the compute thread
    /// waiting. (With the whole window in one group it waited once per group.) A window of 2
    /// (the default) leaves no room: each batch is stored as soon as it is made.
    /// </summary>
    private int MaxGroup => Math.Clamp(spec!.Cluster.Window - 2, 1, 8);
    /// <summary>Each student's data-plane endpoint, as of its latest request (null: through Akka).</summary>
    private readonly Dictionary<string, string?> endpoints = [];

    public GeneratorEntity(string entityId, NodeServices services) : base(entityId, services)
    {
        Command<StartEntity>(OnStart);
        Command<RequestBatches>(OnRequest);
        Command<CompetitorReady>(OnCompetitor);
        Command<Advanced>(OnAdvanced);
        Command<CompetitorUnreadable>(u =>
        {
            busy = false;
            competitors.Remove(u.Round);
            Log.Warning("{0}: student weights for round {1} unreadable ({2}); waiting for them again", Id, u.Round, u.Reason);
        });
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
        Command<GetEntityStatus>(_ => Sender.Tell(new EntityStatus(Id, State.Started, GeneratorStep, State.Produced, wanted.Count,
            State.Pool.Count, Services.NodeName, (State.Finished ? "finished" : !busy ? "idle"
                : rounds is null ? "synthesising" : $"synthesising round {Math.Max(synthesized, State.Produced) + 1}, iteration {roundIteration}")
                + (unstored.Count > 0 ? $"; {unstored.Count} awaiting storage" : ""))));
        Command<StopEntity>(_ => Finish());
    }

    protected override void OnRecovered()
    {
        if (State.Started && !State.Finished) StartEngine();
    }

    private string RunId => State.RunId!;

    /// <summary>DAFL steps (one per batch) or DeepInversion rounds finished.</summary>
    private long GeneratorStep => synth?.Step ?? rounds?.Round ?? 0;

    /// <summary>Batches the run needs (unbounded until the engine is ready).</summary>
    private long TotalBatches => totalBatches > 0 ? totalBatches : long.MaxValue;

    /// <summary>The run's evaluation interval in batches (0: only at the end).</summary>
    private long EvalEvery => spec!.Method.PipelineEvalEvery(spec);

    /// <summary>Stepwise sources: steps between checkpoints. DeepInversion: pixel iterations between checkpoints of a round in progress.</summary>
    private long CheckpointEvery => spec!.Cluster.GeneratorCheckpointEvery > 0 ? spec.Cluster.GeneratorCheckpointEvery
        : spec.DeepInversion is { } di ? Math.Max(1, di.Iterations / 4)
        : spec.Cluster.CheckpointEvery > 0 ? spec.Cluster.CheckpointEvery : EvalEvery > 0 ? EvalEvery : DefaultCheckpointEvery;

    /// <summary>Checkpoint interval of a run that evaluates only at its end and names none.</summary>
    internal const int DefaultCheckpointEvery = 500;

    /// <summary>The temperature of the teacher's probabilities the student's objective needs (null: none); set with the spec.</summary>
    private double? labelTemperature;

    private bool Adaptive => spec!.Adaptive;

    private void OnStart(StartEntity m)
    {
        if (State.Started) return;
        RunSpec s;
        try { s = EngineAccess.ParseSpec(m.SpecYaml, m.RunId); }
        catch (Exception e) { Sender.Tell(new EntityFailed(m.RunId, Id, $"spec unusable on this node: {e.Message}")); return; }
        if (s.Method.SourceUsesTeacher && m.TeacherBlob is null) { Sender.Tell(new EntityFailed(m.RunId, Id, $"method '{s.Method.Name}': the source needs the trained teacher")); return; }
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
        labelTemperature = spec.Method.Objective(spec).SoftLabelTemperature;
        busy = true;
        var s = spec;
        var st = State;
        EngineAccess.Compute(() =>
        {
            var device = EngineAccess.DeviceFor(s);
            var data = Services.Data(s.Data);
            var t = s.Method.SourceUsesTeacher
                ? EngineAccess.LoadModel(s.Method.TeacherOf(s)!.Arch, data, s.Data.ImageSize, Services.Blobs.Get(st.TeacherBlob!), device)
                : null;
            var source = EngineAccess.Seeded(s.Seed, () => s.Method.CreateSource(new SourceContext(s, data, device, t)));
            if (source is not null)
            {
                var (_, warning) = Checkpoints.RestoreNewest(st.Checkpoints, Services.Blobs, source.LoadState, RunId, Id);
                return new EngineReady(source, null, null, t, warning, s.Method.PipelineStudentSteps(s, data.TrainX.shape[0]));
            }
            if (t is null) throw new InvalidOperationException($"method '{s.Method.Name}': rounds of synthesis need the teacher");
            var di = s.Adaptive ? s.DeepInversion! : s.DeepInversion! with { CompetitionWeight = 0 };
            var r = new RoundSynthesizer(t, di, data.Mean, data.Std, device, s.Seed);
            // ADI's first round competes with the student as every replica starts it
            var c = s.Adaptive ? EngineAccess.NewStudent(s, data, device) : null;
            // only a checkpoint of the round after the last stored one matters: earlier rounds need no state
            var produced = st.Produced;
            var current = st.Checkpoints.Where(k => k.Seq == produced).ToImmutableList();
            var (_, w) = Checkpoints.RestoreNewest(current, Services.Blobs, rd => r.LoadState(rd, c), RunId, Id);
            if (r.Round != produced) r.SkipTo((int)produced);
            return new EngineReady(null, r, c, t, w, s.DeepInversion!.Rounds);
        }).PipeTo(Self);
    }

    private void OnEngineReady(EngineReady r)
    {
        synth = r.Source;
        totalBatches = r.TotalBatches;
        foreach (var beyond in wanted.Keys.Where(k => k > totalBatches).ToList()) wanted.Remove(beyond);
        rounds = r.Rounds;
        competitor = r.Competitor;
        teacher = r.Teacher;
        if (r.Warning is not null) Log.Error(r.Warning);
        // where it runs (status shows the node) and what it had to skip
        Services.Coordinator.Tell(new EntityProgress(RunId, Id, GeneratorStep, TotalBatches, 0, State.Pool.Count, null, Services.NodeName, r.Warning));
        Log.Info("{0}: generator ready at step {1}{2}, {3} batches produced, {4} in the pool", Id, GeneratorStep,
            rounds is { InRound: true } ? $" (round {rounds.Round + 1} resumes at iteration {rounds.Iteration})" : "", State.Produced, State.Pool.Count);
        if (synth is not null && synth.Step < State.Produced)
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
                    using var o = g.Next(false);
                    if (pool.TryGetValue(g.Step, out var stored) && BlobStoreHash(o.Images) == stored.Blob) identical++;
                }
                return new Replayed(upTo - from, identical);
            }).PipeTo(Self);
            return;
        }
        busy = false;
        Produce();
    }

    private static string BlobStoreHash(TorchSharp.torch.Tensor images) =>
        BlobStore.Hash(MessagePackSerializer.Serialize(TensorWire.ToPayload(images)));

    private void OnRequest(RequestBatches m)
    {
        if (!State.Started) { Log.Warning("{0}: batches requested before the run started; ignored (the student asks again)", Id); return; }
        if (spec is null) { Log.Warning("{0}: batches requested from a generator whose spec did not load; ignored", Id); return; }
        endpoints[m.ReplyTo] = m.DataEndpoint;
        for (var seq = m.FromSeq; seq < m.FromSeq + m.Count && seq <= TotalBatches; seq++)
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
                SendBatch(m.ReplyTo, seq, Load(stored.Blob), stored.LabelsBlob is { } lb ? Load(lb) : null,
                    stored.TrueLabelsBlob is { } tb ? Load(tb) : null);
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
        if (busy || (synth is null && rounds is null) || State.Finished || wanted.Count == 0) return;
        synthesized = Math.Max(synthesized, State.Produced);
        var next = synthesized + 1;
        // (a wanted batch below `next` is synthesised and being journaled: its journal callback sends it)
        if (wanted.Keys.Last() < next) return;
        if (rounds is not null) { ProduceRound(next); return; }
        busy = true;
        var g = synth!;
        var wantMetrics = next % 50 == 0;
        var checkpointDue = next % CheckpointEvery == 0 || next == totalBatches;
        var labelDType = TensorWire.Parse(spec!.Cluster.SoftLabels);
        // a grid at each of the run's evaluation steps, as the engine loop draws
        var grid = EvalEvery > 0 && next % EvalEvery == 0 || next == totalBatches ? spec.Method.SampleGrid(spec) : 0;
        var dataset = spec.Data.Name;
        var temperature = labelTemperature;
        EngineAccess.Compute(() =>
        {
            using var o = g.Next(wantMetrics);
            byte[]? png = null;
            if (grid > 0 && g.Samples(grid) is { } x)
            {
                var (mean, std, _) = DataSplits.Constants(dataset);
                using (x) png = SampleGrid.ToPng(x, mean, std);
            }
            var images = TensorWire.ToPayload(o.Images);
            var trueLabels = o.Labels is { } y ? TensorWire.LabelsToPayload(y) : null;
            // a source that ran the teacher on exactly this batch (DAFL's loss needs its logits)
            // labels from those, as the engine loop does, rather than with a second teacher pass
            TensorPayload? soft = null;
            if (temperature is { } t && o.TeacherLogits is { } logits)
                using (var probs = SoftLabels.FromLogits(logits, t)) soft = TensorWire.ToPayload(probs, labelDType);
            var checkpoint = checkpointDue ? EngineAccess.Save(g.SaveState) : null;
            return Staged(next, images, soft, trueLabels, o.Metrics, checkpoint, png);
        }).PipeTo(Self);
    }

    /// <summary>
    /// The next slice of DeepInversion round `next`. ADI begins a round only with the student's
    /// weights from the end of the round before (round 1: the initial student).
    /// </summary>
    private void ProduceRound(long next)
    {
        var r = rounds!;
        string? weightsBlob = null;
        if (!r.InRound && Adaptive && next > 1)
        {
            if (!competitors.TryGetValue(next, out var c)) return;   // the student sends them with its request
            weightsBlob = c.WeightsBlob;
        }
        busy = true;
        var di = spec!.DeepInversion!;
        var every = CheckpointEvery;
        var labelDType = TensorWire.Parse(spec!.Cluster.SoftLabels);
        var model = competitor;
        var blobs = Services.Blobs;
        var slice = iterationsPerJob;
        var grid = di.SampleGrid;
        var (mean, std, _) = DataSplits.Constants(spec.Data.Name);
        EngineAccess.Compute<object>(() =>
        {
            if (!r.InRound)
            {
                // the weights are read here, off the mailbox: a student's model can be large
                if (weightsBlob is not null)
                {
                    try { EngineAccess.LoadInto(model!, blobs.Get(weightsBlob)); }
                    catch (BlobException e) { return new CompetitorUnreadable(next, e.Message); }
                }
                r.Begin(model);
            }
            var clock = System.Diagnostics.Stopwatch.StartNew();
            double PerIteration(int ran) => clock.Elapsed.TotalSeconds / Math.Max(1, ran);
            for (var i = 0; i < slice; i++)
            {
                var last = r.Iteration + 1 == di.Iterations;
                var (metrics, done) = r.Iterate(wantMetrics: last);
                if (done is not null)
                    using (done)
                    {
                        metrics ??= [];
                        metrics["best_loss"] = done.BestLoss;
                        byte[]? png = null;
                        if (grid > 0)
                            using (var x = done.Images.narrow(0, 0, Math.Min(grid, done.Images.shape[0]))) png = SampleGrid.ToPng(x, mean, std);
                        return Staged(next, TensorWire.ToPayload(done.Images), TensorWire.ToPayload(done.Probs, labelDType), null, metrics, null, png);
                    }
                if (r.Iteration % every == 0) return new Advanced(next, r.Iteration, EngineAccess.Save(r.SaveState), PerIteration(i + 1));
            }
            return new Advanced(next, r.Iteration, null, PerIteration(slice));
        }).PipeTo(Self);
    }

    private void OnAdvanced(Advanced a)
    {
        roundIteration = a.Iteration;
        if (a.SecondsPerIteration > 0)
            iterationsPerJob = (int)Math.Clamp(SliceTarget.TotalSeconds / a.SecondsPerIteration, 1, 1000);
        if (a.Checkpoint is null) { busy = false; Produce(); return; }
        // a round in progress: journaled with Seq = rounds finished, so a restart resumes it only if no later round was stored
        var blob = Services.Blobs.Put(a.Checkpoint);
        var old = State.Checkpoints;
        var di = spec!.DeepInversion!;
        Persist(new CheckpointWritten((a.Seq - 1) * di.Iterations + a.Iteration, a.Seq - 1, blob, null, 0), e =>
        {
            State = State.Apply(e);
            DeleteDroppedCheckpoints(old);
            busy = false;
            Produce();
        });
    }

    private void OnCompetitor(CompetitorReady m)
    {
        if (spec is null || !Adaptive || m.Round <= State.Produced) return;   // stored already: served from the pool
        var expected = (m.Round - 1) * (long)spec.DeepInversion!.StudentSteps;
        if (m.StudentStep != expected)
        {
            Log.Warning("{0}: student weights at step {1} offered for round {2}, which competes with the student at step {3}; ignored", Id, m.StudentStep, m.Round, expected);
            return;
        }
        if (competitors.TryAdd(m.Round, m)) Produce();
    }

    private void OnSynthesized(Synthesized s)
    {
        unstored.Add(s);
        synthesized = s.Seq;
        roundIteration = 0;
        if (s.Checkpoint is null)
        {
            // the next synthesis starts now and overlaps this batch's storage (a checkpoint is
            // journaled after its batch first: a restart replays from it)
            busy = false;
            Produce();
        }
        // group commit: a DAFL batch waits to be stored with the next one while that one is being
        // synthesised; when none could start (the students' windows are full) it is stored now,
        // so nobody waits on it. A DeepInversion round is stored at once: rounds take long.
        if (s.Checkpoint is null && rounds is null && busy && unstored.Count < MaxGroup) return;
        StoreGroup();
    }

    /// <summary>
    /// Group commit: the batches synthesised since the last store are made durable together (their
    /// blobs flushed and named, then one journal write for all of them) and only then sent. On two
    /// cores each flush and journal commit costs the compute team a little (the kernel's I/O work
    /// preempts it), so fewer, larger ones leave it more of the machine.
    /// </summary>
    private void StoreGroup()
    {
        var group = unstored.ToList();
        unstored.Clear();
        var events = new List<BatchStored>(group.Count);
        try
        {
            foreach (var s in group)
                events.Add(new BatchStored(s.Seq, Commit(s.ImagesBlob), s.SoftLabelsBlob is { } sb ? Commit(sb) : null, s.TrueLabelsBlob is { } tb ? Commit(tb) : null));
        }
        catch (Exception e) when (e is IOException or BlobException or UnauthorizedAccessException)
        {
            Fail($"batch {group[0].Seq}{(group.Count > 1 ? $"-{group[^1].Seq}" : "")} could not be stored: {e.Message}");
            return;
        }
        var bySeq = group.ToDictionary(g => g.Seq);
        PersistAll(events, e =>
        {
            State = State.Apply(e);
            var s = bySeq[e.Seq];
            var checkpoint = s.Checkpoint is not null;
            if (checkpoint) busy = false;
            if (wanted.Remove(s.Seq, out var who))
                foreach (var student in who) SendBatch(student, s.Seq, s.Images, s.SoftLabels, s.TrueLabels);
            if (s.Metrics is { } m)
            {
                if (m.TryGetValue("classes", out var classes) && classes < spec!.Guard.MinClasses)
                    Log.Warning("{0}: batch {1} covers only {2} classes (generator collapse?)", Id, s.Seq, classes);
                Services.Coordinator.Tell(RunMetrics.Of(RunId, Id, s.Seq, m));
            }
            if (s.SamplesPng is { } png) Services.Coordinator.Tell(new RunSamples(RunId, Id, s.Seq, png));
            if (s.Seq % 25 == 0 || rounds is not null)
                Services.Coordinator.Tell(new EntityProgress(RunId, Id, GeneratorStep, TotalBatches, wanted.Count, State.Pool.Count, null, Services.NodeName, null));
            if (rounds is not null)
            {
                Log.Info("{0}: round {1} of {2} synthesised (best loss {3:F4})", Id, s.Seq, TotalBatches, s.Metrics?.GetValueOrDefault("best_loss") ?? double.NaN);
                if (competitors.Remove(s.Seq, out var used)) Services.Blobs.Delete(used.WeightsBlob);
            }
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
            DeleteDroppedCheckpoints(old);
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

    /// <summary>
    /// On the compute thread, right after synthesis: serialises, hashes and writes the batch's two
    /// blobs under temporary names. That work (0.5 MB of copying and SHA-256 per DAFL quick batch)
    /// on the actor threads ran beside the compute thread's OpenMP team and cost the pipeline ~3%
    /// of its speed on two cores; here it runs between jobs. OnSynthesized makes them durable.
    /// </summary>
    private Synthesized Staged(long seq, TensorPayload images, TensorPayload? soft, TensorPayload? trueLabels,
        IReadOnlyDictionary<string, double>? metrics, byte[]? checkpoint, byte[]? png) =>
        new(seq, images, soft, trueLabels, Stage(images), soft is null ? null : Stage(soft), trueLabels is null ? null : Stage(trueLabels), metrics, checkpoint, png);

    /// <summary>One buffer for every batch's blob (compute thread only: an entity's jobs never overlap).</summary>
    private readonly ArrayBufferWriter<byte> blobBuffer = new(1 << 20);

    private StagedBlob Stage(TensorPayload p)
    {
        blobBuffer.ResetWrittenCount();
        MessagePackSerializer.Serialize(blobBuffer, p);
        var staged = Services.Blobs.Stage(blobBuffer.WrittenSpan);
        lock (uncommitted) uncommitted.Add(staged);
        return staged;
    }

    /// <summary>Staged blobs not committed yet (compute thread adds, mailbox removes; PostStop discards the rest).</summary>
    private readonly HashSet<StagedBlob> uncommitted = [];

    private string Commit(StagedBlob staged)
    {
        var hash = Services.Blobs.Commit(staged);
        lock (uncommitted) uncommitted.Remove(staged);
        return hash;
    }

    private TensorPayload Load(string blob) => MessagePackSerializer.Deserialize<TensorPayload>(Services.Blobs.Get(blob));

    /// <summary>
    /// A batch to the student that asked: straight to it when it carries what the objective needs,
    /// through the teacher when it lacks the teacher's probabilities (a real-data batch, or one stored
    /// without them by an older journal).
    /// </summary>
    private void SendBatch(string student, long seq, TensorPayload images, TensorPayload? soft, TensorPayload? trueLabels)
    {
        var temperature = labelTemperature;
        if (soft is null && temperature is { } t)
        {
            Services.Teachers.Tell(new LabelBatch(Contracts.EntityId.Teacher(RunId), seq, images, student, trueLabels, t));
            return;
        }
        Services.SendToStudent(new LabelledBatch(student, seq, images, soft, temperature ?? 1, trueLabels), endpoints.GetValueOrDefault(student));
    }

    private void DeleteBlobs(BatchStored b)
    {
        Services.Blobs.Delete(b.Blob);
        if (b.LabelsBlob is { } lb) Services.Blobs.Delete(lb);
        if (b.TrueLabelsBlob is { } tb) Services.Blobs.Delete(tb);
    }

    private void Fail(string reason)
    {
        busy = false;
        ReportFailure(reason);
    }

    private void Finish()
    {
        if (State.Finished) { Context.Parent.Tell(new Passivate(PoisonPill.Instance)); return; }
        var pool = State.Pool.Values.ToList();
        Persist(new EntityFinished(GeneratorStep), e =>
        {
            State = State.Apply(e);
            foreach (var b in pool) DeleteBlobs(b);
            Context.Parent.Tell(new Passivate(PoisonPill.Instance));
        });
    }

    protected override void PostStop()
    {
        // batches synthesised and never stored, including one a job still running will stage:
        // nothing refers to their files (this runs on the compute thread after that job)
        var blobs = Services.Blobs;
        var staged = uncommitted;
        EngineAccess.Release(() =>
        {
            lock (staged)
                foreach (var b in staged)
                    try { blobs.Discard(b); }
                    catch (IOException) { }
        });
        var (g, r, c, t) = (synth, rounds, competitor, teacher);
        EngineAccess.Release(() => { g?.Dispose(); r?.Dispose(); c?.Dispose(); t?.Dispose(); });
        base.PostStop();
    }
}
