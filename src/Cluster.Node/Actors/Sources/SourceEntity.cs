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
using Cluster.Node.Telemetry;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;
using MessagePack;
using static Cluster.Node.Actors.SourceJobs;

namespace Cluster.Node.Actors;

/// <summary>
/// A run's source of batches (sharded entity "run/generator/0"): the method's <see cref="IBatchSource"/>
/// (DAFL's generator network, a loader of real data, DeepInversion rounds), worked in slices of
/// units so that other entities' jobs interleave, with checkpoints part-way through a long batch.
/// It makes batches on demand only (students pull, so memory stays bounded), stores each as a blob
/// and journals it before anyone sees it (a few at a time where the window allows: group commit),
/// and re-serves stored batches to a student that asks again after a failover, so no batch is lost
/// or trained twice. A batch goes to the students with the teacher's probabilities when the source
/// computed them, else through the teacher entity when the objective needs them. After a restart
/// the source catches up to the batches stored (a generator replays its steps since its
/// checkpoint) so that its next batch is the one an uninterrupted run would have made. Where
/// batches compete with the student (ADI), a batch begins only with the student's weights for it
/// (<see cref="CompetitorReady"/>). It knows the plan's shape, never the method.
/// </summary>
public sealed partial class SourceEntity : PersistentEntity
{
    public static Props GetProps(string entityId, NodeServices services) => Props.Create(() => new SourceEntity(entityId, services));

    /// <summary>
    /// How long a job should keep the compute thread: the other entities' jobs on this node wait at
    /// most this long, and a job is long enough that the hand-over between jobs costs nothing
    /// measurable. The units per job follow the measured time per unit; the result does not depend on it.
    /// </summary>
    public static readonly TimeSpan SliceTarget = TimeSpan.FromMilliseconds(100);
    private const int SnapshotEvery = 200;

    private RunSpec? spec;
    private BatchPlan? plan;
    /// <summary>Owned by the compute thread once ready: the mailbox only passes them to jobs.</summary>
    private IBatchSource? source;
    private Classifier? teacher;
    private readonly Stager stager;
    private int unitsPerJob = 1;
    /// <summary>Units done on the batch in progress, as of the last job.</summary>
    private int unitsDone;
    private double? labelTemperature;
    private bool busy;
    /// <summary>Highest batch made, stored or not (the next may start while the last is being stored).</summary>
    private long made;
    /// <summary>Batches asked for and not made yet, with who asked.</summary>
    private readonly SortedDictionary<long, HashSet<string>> wanted = [];
    private readonly Dictionary<string, long> releasedBy = [];
    /// <summary>Made batches waiting to be stored with the next one; nobody has seen them.</summary>
    private readonly List<Made> unstored = [];
    /// <summary>Each student's data-plane endpoint, as of its latest request (null: through Akka).</summary>
    private readonly Dictionary<string, string?> endpoints = [];
    /// <summary>The student weights offered for each batch that competes with the student.</summary>
    private readonly Dictionary<long, CompetitorReady> competitors = [];

    public SourceEntity(string entityId, NodeServices services) : base(entityId, services)
    {
        stager = new Stager(OwnBlobs);
        Command<StartEntity>(OnStart);
        Command<Ready>(OnEngineReady);
        Command<RequestBatches>(OnRequest);
        Command<CompetitorReady>(OnCompetitor);
        Command<GetCheckpointAt>(OnGetCheckpointAt);
        Command<Advanced>(OnAdvanced);
        Command<Made>(OnMade);
        Command<RolledBack>(OnRolledBack);
        Command<CompetitorUnreadable>(u =>
        {
            busy = false;
            competitors.Remove(u.Seq);
            Log.Warning("{0}: student weights for batch {1} unreadable ({2}); waiting for them again", Id, u.Seq, u.Reason);
        });
        Command<ReleaseBatches>(OnRelease);
        Command<RebuilderReady>(OnRebuilderReady);
        Command<RebuildAdvanced>(OnRebuildAdvanced);
        Command<Rebuilt>(OnRebuilt);
        Command<Status.Failure>(f => Fail($"source failed: {f.Cause.Message}"));
        Command<GetEntityStatus>(_ => Sender.Tell(new EntityStatus(Id, State.Started, Math.Max(made, State.Produced), State.Produced, wanted.Count,
            State.Pool.Count, Services.NodeName, (State.Finished ? "finished" : !busy ? "idle"
                : $"making batch {Math.Max(made, State.Produced) + 1}" + (plan is { UnitsPerBatch: > 1 } p ? $", unit {unitsDone} of {p.UnitsPerBatch}" : ""))
                + (goingBack is { } g ? $"; batch {g} failed the guard, the generator goes back" : "")
                + (unstored.Count > 0 ? $"; {unstored.Count} awaiting storage" : "")
                + (held.Count > 0 ? $"; {held.Count} held in memory ({heldBytes / 1048576.0:F1} MiB)" : "")
                + (toRebuild.Count > 0 ? $"; making batch {toRebuild.Keys.First()} again" : ""))));
        Command<StopEntity>(m =>
        {
            NodeMetrics.RetireRun(EntityId.Parse(m.EntityId).RunId);
            Finish();
        });
    }

    protected override void OnRecovered()
    {
        if (State.Started && !State.Finished) StartEngine();
    }

    private string RunId => State.RunId!;
    private long TotalBatches => plan?.TotalBatches ?? long.MaxValue;
    private long EvalEvery => spec!.Method.PipelineEvalEvery(spec);

    private void OnStart(StartEntity m)
    {
        if (State.Started) return;
        RunSpec s;
        try { s = EngineAccess.ParseSpec(m.SpecYaml, m.RunId); }
        catch (Exception e) { Sender.Tell(new EntityFailed(m.RunId, Id, $"spec unusable on this node: {e.Message}")); return; }
        if (s.Method.SourceUsesTeacher && m.TeacherBlob is null) { Sender.Tell(new EntityFailed(m.RunId, Id, $"method '{s.Method.Name}': the source needs the trained teacher")); return; }
        spec = s;
        var forked = m.Fork is null ? [] : ForkEvents(s, m.Fork);
        if (forked is null) { Sender.Tell(new EntityFailed(m.RunId, Id, ForkProblem(m.Fork!))); return; }
        IPersistedEvent[] events = [new EntityStarted(m.RunId, m.SpecYaml, m.TeacherBlob), .. forked];
        var left = events.Length;
        PersistAll(events, e =>
        {
            State = State.Apply(e);
            if (--left == 0) StartEngine();
        });
    }

    /// <summary>
    /// A run that begins from another's checkpoints (PBT): the source's checkpoint right after the
    /// fork step's batches, and those batches counted as made and released, so that it restores
    /// there, replays nothing and makes the next batch first (null: the checkpoint is not in its store).
    /// </summary>
    private IPersistedEvent[]? ForkEvents(RunSpec s, ForkPoint fork)
    {
        if (fork.SourceBlob is not { } blob || !OwnBlobs.Exists(blob)) return null;
        var p = s.Method.Plan(s);
        var seq = p.BatchesFor(fork.Step).Last;
        return [new CheckpointWritten(seq * p.UnitsPerBatch, seq, blob, null, 0), new BatchesReleased(seq)];
    }

    private static string ForkProblem(ForkPoint fork) =>
        $"the run begins from {fork.From} at step {fork.Step}, but that run's source checkpoint ({fork.SourceBlob?[..12] ?? "none"}) is not in this source's store";

    /// <summary>The checkpoint written right after batch Seq, for a run that pauses there and may be forked from.</summary>
    private void OnGetCheckpointAt(GetCheckpointAt m) =>
        Sender.Tell(new CheckpointAt(Id, m.Seq, State.Checkpoints.LastOrDefault(c => c.Seq == m.Seq && c.Step == m.Seq * (plan?.UnitsPerBatch ?? 1))?.Blob));

    private void StartEngine()
    {
        try { spec ??= EngineAccess.ParseSpec(State.SpecYaml!, RunId); }
        catch (Exception e) { Fail($"spec unusable on this node: {e.Message}"); return; }
        labelTemperature = spec.Method.Objective(spec).SoftLabelTemperature;
        busy = true;
        var (s, st, services, runId) = (spec, State, Services, RunId);
        var teacherBlob = s.Method.SourceUsesTeacher ? st.TeacherBlob : null;
        var copies = teacherBlob is null ? [] : TeacherCopies.Candidates(services.Options, s, runId);
        EngineAccess.Compute(Self, () => Start(s, services.Data(s.Data), teacherBlob, copies, st.Checkpoints, st.Pool, st.Produced, services.Blobs, OwnBlobs));
    }

    private void OnEngineReady(Ready r)
    {
        if (State.Finished)
        {
            // the run ended while this loaded (a stop woke the passivated entity): nothing to make or to report
            EngineAccess.Release(() => { r.Source.Dispose(); r.Teacher?.Dispose(); });
            return;
        }
        (source, teacher, plan) = (r.Source, r.Teacher, r.Plan);
        made = State.Produced;
        unitsDone = r.Source.UnitsDone;
        StartGuard(r.CanRollBack);
        foreach (var beyond in wanted.Keys.Where(k => k > plan.TotalBatches).ToList()) wanted.Remove(beyond);
        if (r.Warning is not null) Log.Error("{0}: {1}", Id, r.Warning);
        // where it runs (status shows the node) and what it had to skip
        Services.Coordinator.Tell(new EntityProgress(RunId, Id, made, TotalBatches, 0, State.Pool.Count, null, Services.NodeName, r.Warning, rollbacks));
        Log.Info("{0}: generator ready at batch {1}{2}, {3} in the pool", Id, made, unitsDone > 0 ? $" (batch {made + 1} resumes at unit {unitsDone})" : "", State.Pool.Count);
        // a source that comes back past its first batch counts as a failover, as a student past its first step does
        if (made > 0 || unitsDone > 0) NodeMetrics.Failovers.WithLabels(RunId, EntityKinds.Generator).Inc();
        if (r.Replayed > 0)
            Log.Info("{0}: replayed {1} generator steps after restart ({2} of them reproduced the stored batch bit for bit, {3} held again)", Id, r.Replayed, r.Identical, r.Refilled.Count);
        Refill(r.Refilled);
        busy = false;
        Produce();
        Rebuild();
    }

    private void OnRequest(RequestBatches m)
    {
        if (!State.Started) { Log.Warning("{0}: batches requested before the run started; ignored (the student asks again)", Id); return; }
        // a request that arrived after the run ended woke the stopped source: nothing to make, and nothing wrong
        if (State.Finished) { Log.Debug("{0}: batches requested after the run ended; ignored", Id); Context.Parent.Tell(new Passivate(PoisonPill.Instance)); return; }
        if (spec is null) { Log.Warning("{0}: batches requested from a source whose spec did not load; ignored", Id); return; }
        endpoints[m.ReplyTo] = m.DataEndpoint;
        for (var seq = m.FromSeq; seq < m.FromSeq + m.Count && seq <= TotalBatches; seq++)
        {
            if (seq <= State.ReleasedUpTo)
            {
                RebuildLater(seq, m.ReplyTo, "every student had released (checkpointed past)");
                continue;
            }
            if (State.Pool.TryGetValue(seq, out var stored))
            {
                // stored already (a student came back from a checkpoint): the same batch again, with
                // the same labels, never a new one (the teacher labels one stored without its labels);
                // from memory where it is held
                if (TryLoad(stored, m.ReplyTo) is var (images, soft, trueLabels)) SendBatch(m.ReplyTo, seq, images, soft, trueLabels);
                continue;
            }
            if (!wanted.TryGetValue(seq, out var who)) wanted[seq] = who = [];
            who.Add(m.ReplyTo);
        }
        Produce();
        Rebuild();
    }

    /// <summary>Works on the next batch if a student waits for it (or a later one).</summary>
    private void Produce()
    {
        if (busy || source is null || State.Finished) return;
        if (SourceDecisions.NextToMake(made, State.Produced, wanted.Count > 0 ? wanted.Keys.Last() : null) is not { } next) return;
        string? weights = null;
        if (unitsDone == 0 && plan!.StudentStepFor(next) is not null)
        {
            if (!competitors.TryGetValue(next, out var c)) return;   // the student sends them with its request
            weights = c.WeightsBlob;
        }
        busy = true;
        var order = new WorkOrder(next, plan!.TotalBatches, plan.UnitsPerBatch, unitsPerJob, SourceDecisions.CheckpointEvery(spec!.Cluster, plan, EvalEvery),
            WantMetrics: ReadsMetrics(next), weights, labelTemperature, TensorWire.Parse(spec.Cluster.SoftLabels),
            plan.GridDue(next, EvalEvery) ? spec.Method.SampleGrid(spec) : 0, spec.Data.Name, SourceDecisions.HoldInMemory(spec.Cluster, plan, next));
        var (src, blobs, st) = (source, Services.Blobs, stager);
        EngineAccess.Compute(Self, () => Work(src, order, blobs, st));
    }

    /// <summary>
    /// Whether batch seq carries the source's metrics (and the guard checks them): on the steps the
    /// engine loop reads its metrics on (<see cref="DivergenceGuard.ReadsMetrics"/>: the first, every
    /// log interval, evaluations, the last), so that both catch a collapse at the same batch, and on
    /// every guard.check_every-th, which mark the states a rollback may go back to.
    /// </summary>
    private bool ReadsMetrics(long seq) =>
        seq % spec!.Guard.CheckEvery == 0
        || DivergenceGuard.ReadsMetrics(null, seq, Distill.Engine.Runs.RunnerOptions.DefaultLogEvery, MethodDefinition.EvaluationDue(seq, EvalEvery, TotalBatches));

    private void OnAdvanced(Advanced a)
    {
        unitsDone = a.UnitsDone;
        unitsPerJob = SourceDecisions.UnitsPerJob(SliceTarget, a.SecondsPerUnit);
        if (a.Checkpoint is null) { busy = false; Produce(); return; }
        // part of a batch: journaled with Seq = batches made, so a restart resumes it only if no later batch was stored
        var blob = OwnBlobs.Put(a.Checkpoint);
        var old = State.Checkpoints;
        Persist(new CheckpointWritten((a.Seq - 1) * plan!.UnitsPerBatch + a.UnitsDone, a.Seq - 1, blob, null, 0), e =>
        {
            State = State.Apply(e);
            DeleteDroppedCheckpoints(old);
            busy = false;
            Produce();
        });
    }

    private void OnCompetitor(CompetitorReady m)
    {
        if (plan is null || m.Round <= State.Produced) return;   // stored already: served from the pool
        if (plan.StudentStepFor(m.Round) is not { } expected || m.StudentStep != expected)
        {
            Log.Warning("{0}: student weights at step {1} offered for batch {2}, which does not compete with that step; ignored", Id, m.StudentStep, m.Round);
            return;
        }
        if (competitors.TryAdd(m.Round, m)) Produce();
    }

    private void OnMade(Made s)
    {
        var reason = Unhealthy(s);
        // a batch that failed the guard is stored without its checkpoint: the state it holds failed
        unstored.Add(reason is null ? s : s with { Checkpoint = null });
        made = s.Seq;
        unitsDone = 0;
        if (reason is not null) { GoBack(s.Seq, reason); return; }
        // the next batch starts now and overlaps this one's storage (a checkpoint is journaled after its batch first: a restart replays from it)
        if (s.Checkpoint is null) { busy = false; Produce(); }
        if (!SourceDecisions.StoreNow(s.Checkpoint is not null, plan!.UnitsPerBatch, busy, unstored.Count, SourceDecisions.MaxGroup(spec!.Cluster.Window))) return;
        StoreGroup();
    }

    private void Fail(string reason)
    {
        // a source going back holds the batches it made until it has: it makes no other meanwhile
        if (goingBack is null) busy = false;
        ReportFailure(reason);
    }

    private void Finish()
    {
        if (State.Finished) { Context.Parent.Tell(new Passivate(PoisonPill.Instance)); return; }
        var pool = State.Pool.Values.ToList();
        Persist(new EntityFinished(Math.Max(made, State.Produced)), e =>
        {
            State = State.Apply(e);
            Unhold(long.MaxValue);
            foreach (var b in pool) DeleteBlobs(b);
            Context.Parent.Tell(new Passivate(PoisonPill.Instance));
        });
    }

    protected override void PostStop()
    {
        WriteHeld();
        // batches made and never stored, including one a job still running will stage: nothing refers to their files
        var (st, g, r, t) = (stager, source, rebuilder, teacher);
        EngineAccess.Release(() => { st.DiscardRest(); g?.Dispose(); r?.Dispose(); t?.Dispose(); });
        base.PostStop();
    }
}
