using System.Diagnostics;
using System.Collections.Immutable;
using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Akka.Persistence;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Students;
using Cluster.Node.Hosting;
using Cluster.Node.Telemetry;
using Distill.Engine.Methods;
using Distill.Engine.Pipeline;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using static Cluster.Node.Actors.StudentJobs;

namespace Cluster.Node.Actors;

/// <summary>
/// One replica of a run's student (sharded entity "run/student/r", remembered). It asks the source
/// for the batches its <see cref="BatchPlan"/> says the next steps read, with a bounded window
/// (<see cref="BatchIntake"/>), trains on them with the method's objective (replicas on their slice
/// of each batch, all-reducing gradients through <see cref="GradientExchange"/>), evaluates, and
/// checkpoints at the spec's interval. After its node dies it comes back elsewhere from its newest
/// good checkpoint and asks for the batches after it, which the source re-serves from its pool.
/// Where the source's batches compete with the student (ADI), it offers its weights when a batch
/// needs them. It knows the plan's shape, never the method.
/// </summary>
public sealed partial class StudentEntity : PersistentEntity
{
    public static Props GetProps(string entityId, NodeServices services) => Props.Create(() => new StudentEntity(entityId, services));

    private readonly int replica;
    private RunSpec? spec;
    private BatchPlan? plan;
    /// <summary>Owned by the compute thread once ready: the mailbox only passes them to jobs.</summary>
    private StudentTrainer? trainer;
    private IStudentFeed? feed;
    /// <summary>The run's dataset (evaluation, a fresh trainer after a rollback) and the model's parameter count.</summary>
    private DataSplits? data;
    private long gradientSize;
    /// <summary>The mailbox's copy of the trainer's step and learning-rate scale (from the jobs' answers).</summary>
    private long step;
    private double lrScale = 1;
    private BatchIntake? intake;
    /// <summary>Batches received and not yet handed to the feed (once handed, the feed's tensors are the only copy).</summary>
    private readonly SortedDictionary<long, LabelledBatch> unhanded = [];
    private GradientExchange? exchange;
    private readonly List<GradientChunk> early = [];
    private readonly Dictionary<int, string?> peerEndpoints = [];
    /// <summary>A step in flight (its job, or waiting for the peers' gradients).</summary>
    private bool busy;
    /// <summary>This incarnation reported the run failed.</summary>
    private bool failed;
    /// <summary>A job queued or running (a rollback waits for it).</summary>
    private bool computing;
    /// <summary>A peer's step below ours that arrived while a job ran: roll back to it when the job is done.</summary>
    private (long Step, double LrScale, int From)? pendingRollback;
    private CompetitorReady? competitorOffer;
    private DivergenceGuard? guard;
    private StudentObjective? objective;
    private double best = double.NegativeInfinity;
    /// <summary>Guard rollbacks by this incarnation (result.json's count; a node's death starts it again at 0).</summary>
    private int rollbacks;
    private DateTime lastBatchUtc = DateTime.UtcNow;
    /// <summary>The step in flight's whole batch (from the replica's own gradient job), for the images counter.</summary>
    private long stepImages;

    public StudentEntity(string entityId, NodeServices services) : base(entityId, services)
    {
        replica = EntityId.Parse(entityId).Index;
        Command<StartEntity>(m =>
        {
            if (State.Started)
            {
                if (State.Finished) ReportFinishedAgain();
                else if (m.HoldAt != State.HoldAt) SetHold(m.HoldAt);
                else if (Held && trainer is not null) ReportHeld(State.Checkpoints.LastOrDefault()?.Accuracy);   // the coordinator may have lost the first report
                return;
            }
            // a method with a teacher starts its students once the teacher exists
            if (m.TeacherBlob is null && !NoTeacher(m.SpecYaml, m.RunId)) return;
            // a run that begins from another's checkpoint (PBT) has it in this replica's store already
            if (m.Fork is { } fork && !OwnBlobs.Exists(fork.StudentBlob))
            {
                Sender.Tell(new EntityFailed(m.RunId, Id, $"the run begins from {fork.From} at step {fork.Step}, but that checkpoint ({fork.StudentBlob[..12]}) is not in this replica's store"));
                return;
            }
            IPersistedEvent[] events =
            [
                new EntityStarted(m.RunId, m.SpecYaml, m.TeacherBlob),
                .. m.Fork is { } f ? [new CheckpointWritten(f.Step, f.Step, f.StudentBlob, null, double.NegativeInfinity)] : Array.Empty<IPersistedEvent>(),
                .. m.HoldAt is null ? [] : new IPersistedEvent[] { new EntityHold(m.HoldAt) },
            ];
            var left = events.Length;
            PersistAll(events, e =>
            {
                State = State.Apply(e);
                if (--left == 0) StartEngine();
            });
        });
        Command<StudentJobs.Ready>(OnEngineReady);
        Command<LabelledBatch>(OnBatch);
        Command<GradientReady>(OnOwnGradient);
        Command<GradientChunk>(OnChunk);
        Command<ReplicaAt>(OnReplicaAt);
        Command<Trained>(OnTrained);
        Command<Status.Failure>(f => OnStepFailed(f.Cause, step + 1));
        Command<RolledBack>(OnRolledBack);
        Command<RestoreFailed>(r =>
        {
            computing = false;
            Fail(r.Reason);
        });
        Command<GetEntityStatus>(_ => Sender.Tell(new EntityStatus(Id, State.Started, step, step + 1, unhanded.Count + (intake?.Received.Count ?? 0),
            (int)Math.Max(0, (intake?.RequestedUpTo ?? 0) - step), Services.NodeName, State.Finished ? "finished" : busy ? "training" : "waiting")));
        // the run ended (completed, failed or cancelled): recorded, so that no later message restarts the training
        Command<StopEntity>(m =>
        {
            NodeMetrics.RetireRun(EntityId.Parse(m.EntityId).RunId);
            if (State.Finished || !State.Started) { Context.Parent.Tell(new Passivate(PoisonPill.Instance)); return; }
            Persist(new EntityFinished(step), e => { State = State.Apply(e); Context.Parent.Tell(new Passivate(PoisonPill.Instance)); });
        });
        Command<CheckStalled>(_ => OnCheckStalled());
    }

    protected override void OnRecovered()
    {
        if (!State.Started || State.Finished) return;
        // it had started before this incarnation: a start without a checkpoint is a restart from step 0
        restarted = true;
        StartEngine();
    }

    /// <summary>This incarnation recovered a started run from its journal (a restart or a failover), not a first start.</summary>
    private bool restarted;

    private string RunId => State.RunId!;
    private int Replicas => spec!.Cluster.Replicas;
    private long Total => plan!.TotalSteps;
    private bool Done => step >= Total;
    /// <summary>At the run's pause step (an ASHA rung): trained and checkpointed up to it, waiting to go on.</summary>
    private bool Held => State.HoldAt is { } h && step >= h;
    private long EvalEvery => spec!.Method.PipelineEvalEvery(spec);
    private long CheckpointEvery => spec!.Cluster.CheckpointEvery > 0 ? spec.Cluster.CheckpointEvery : EvalEvery > 0 ? EvalEvery : SourceDecisions.DefaultCheckpointEvery;

    private static bool NoTeacher(string yaml, string runId)
    {
        try { return !EngineAccess.ParseSpec(yaml, runId).Method.UsesTeacher; }
        catch (SpecException) { return true; }   // StartEngine reports it
    }

    private void StartEngine()
    {
        try { spec = EngineAccess.ParseSpec(State.SpecYaml!, RunId); }
        catch (Exception e) { Fail($"spec unusable on this node: {e.Message}"); return; }
        if (replica >= spec.Cluster.Replicas) { Fail($"replica {replica} of a run with {spec.Cluster.Replicas} replicas"); return; }
        busy = true;
        var (s, checkpoints, blobs, services) = (spec, State.Checkpoints, OwnBlobs, Services);
        EngineAccess.Compute(Self, () =>
        {
            var data = services.Data(s.Data);
            return Start(s, s.Method.Plan(s, data.TrainX.shape[0]), checkpoints, blobs, () => data);
        });
    }

    private void OnEngineReady(StudentJobs.Ready r)
    {
        if (State.Finished)
        {
            // the run ended while this loaded (a stop woke the passivated entity): nothing to train or to report
            EngineAccess.Release(() => { r.Trainer.Model.Dispose(); r.Trainer.Dispose(); r.Feed.Dispose(); });
            return;
        }
        (data, gradientSize, trainer, feed, step, lrScale) = (r.Data, r.GradientSize, r.Trainer, r.Feed, r.Step, r.LrScale);
        plan = r.Plan;
        intake = BatchIntake.At(plan, step);
        exchange = new GradientExchange(Replicas, replica, r.GradientSize, spec!.Cluster.GradientChunk, peer => EntityId.Student(RunId, peer));
        guard = spec!.Guard.Enabled ? new DivergenceGuard(spec.Guard) : null;
        objective = spec.Method.Objective(spec);
        best = r.Best;
        busy = false;
        // the spec's student checkpoint, as the engine loop's events.log says it (one replica says it for the run; a warning after it stays the status's news)
        if (r.Loaded is not null && replica == 0) Services.Coordinator.Tell(new EntityProgress(RunId, Id, step, Total, 0, 0, null, Services.NodeName, r.Loaded));
        if (r.Warning is not null)
        {
            Log.Error("{0}: {1}", Id, r.Warning);
            Services.Coordinator.Tell(new EntityProgress(RunId, Id, step, Total, 0, 0, null, Services.NodeName, r.Warning));
        }
        Log.Info("{0}: student ready at step {1} of {2}", Id, step, Total);
        if (step > 0)
        {
            // a failover or a restart: the run's events (and the dashboard's curves) mark where it came back
            NodeMetrics.Failovers.WithLabels(RunId, EntityKinds.Student).Inc();
            if (r.Warning is null) Services.Coordinator.Tell(new EntityProgress(RunId, Id, step, Total, 0, 0, null, Services.NodeName, $"resumed at step {step} from its checkpoint"));
        }
        else if (restarted && r.Warning is null)
        {
            // stopped before its first checkpoint: the steps it had trained are trained again, and the status says why it counts from 0
            Log.Info("{0}: restarted with no checkpoint yet: training again from step 0", Id);
            Services.Coordinator.Tell(new EntityProgress(RunId, Id, 0, Total, 0, 0, null, Services.NodeName, "restarted before its first checkpoint: training again from step 0"));
        }
        if (r.Competitor is not null) OfferCompetitor(r.Competitor);
        lastBatchUtc = DateTime.UtcNow;
        foreach (var c in early) OnChunk(c);
        early.Clear();
        Timers.StartPeriodicTimer("stalled", CheckStalled.Instance, StallTimeout, TimeSpan.FromSeconds(1));
        AnnounceStep(_ => true, restored: true);
        if (Held) { ReportHeld(State.Checkpoints.LastOrDefault()?.Accuracy); return; }
        RequestMore();
        TryTrain();
    }

    /// <summary>Stores the weights as a blob (shared storage) and tells the source which batch they are for.</summary>
    private void OfferCompetitor(byte[] weights)
    {
        if (plan!.BatchNeedingWeightsAfter(step) is not { } batch) return;
        competitorOffer = new CompetitorReady(EntityId.Generator(RunId), (int)batch, step, Services.Blobs.Put(weights));
        Services.Generators.Tell(competitorOffer);
    }

    private void TryTrain()
    {
        if (busy || failed || trainer is null || State.Finished || Held || !intake!.Ready(step)) return;
        busy = computing = true;
        var seq = step + 1;
        var last = plan!.BatchesFor(seq).Last;
        var handed = unhanded.Keys.TakeWhile(k => k <= last).Select(k => unhanded[k]).ToList();
        foreach (var b in handed) unhanded.Remove(b.Seq);
        var (t, f, device) = (trainer, feed!, EngineAccess.DeviceFor(spec!));
        if (Replicas == 1)
        {
            var after = AfterStepOf(seq);
            var wantLoss = ReadsLoss(seq);
            EngineAccess.Compute(Self, () => Step(t, f, handed, seq, wantLoss, after));
            return;
        }
        var (r, n) = (replica, Replicas);
        EngineAccess.Compute(Self, () => Gradient(t, f, handed, seq, r, n, device));
    }

    /// <summary>
    /// Whether step seq's loss is read, the same on every replica: the engine loop's steps
    /// (<see cref="DivergenceGuard.ReadsMetrics"/>), a pause's (its score may be the loss), and with
    /// the guard on every checkpoint's, so that a rollback never lands on weights it did not check.
    /// </summary>
    private bool ReadsLoss(long seq) =>
        DivergenceGuard.ReadsMetrics(guard, seq, RunnerOptions.DefaultLogEvery,
            MethodDefinition.EvaluationDue(seq, EvalEvery, Total) || State.HoldAt == seq || guard is not null && seq % CheckpointEvery == 0);

    private StudentJobs.AfterStep AfterStepOf(long seq)
    {
        var final = seq >= Total;
        var hold = State.HoldAt == seq;   // the pause step is evaluated and checkpointed: the run goes on from there
        return new(replica == 0 && (MethodDefinition.EvaluationDue(seq, EvalEvery, Total) || hold), seq % CheckpointEvery == 0 || final || hold, final && replica == 0,
            plan!.BatchNeedingWeightsAfter(seq) is not null, data!, EngineAccess.DeviceFor(spec!), spec!.Data.EvalBatch);
    }

    private void OnTrained(Trained t)
    {
        computing = false;
        step = t.Seq;
        if (Unhealthy(t) is { } bad) { OnStepFailed(null, step, bad); return; }
        busy = false;
        if (replica == 0)
        {
            NodeMetrics.StudentSteps.WithLabels(RunId).Inc();
            NodeMetrics.StudentImages.WithLabels(RunId).Inc(t.Images);
        }
        intake = intake!.Trained(step);
        exchange!.DropUpTo(step);
        if (pendingRollback is not null) { RollBackToPeer(); return; }
        if (t.Accuracy is { } a) Log.Info("{0}: step {1}/{2} test accuracy {3:F2}%", Id, step, Total, a);
        if (replica == 0 && (t.Loss is not null || t.Accuracy is not null)) ReportMetrics(t);
        if (t.Accuracy is not null || step % 5 == 0)
            Services.Coordinator.Tell(new EntityProgress(RunId, Id, step, Total, unhanded.Count, 0, t.Accuracy, Services.NodeName, null));
        if (t.Checkpoint is not null) SaveCheckpoint(t);
        if (t.Competitor is not null) OfferCompetitor(t.Competitor);
        RequestMore();
        TryTrain();
    }

    /// <summary>Reports the failure; the entity trains no more (its model may be diverged or half restored) until the run stops it.</summary>
    private void Fail(string reason)
    {
        busy = false;
        failed = true;
        ReportFailure(reason);
    }

    protected override void PostStop()
    {
        var (t, f) = (trainer, feed);
        EngineAccess.Release(() => { t?.Model.Dispose(); t?.Dispose(); f?.Dispose(); });
        base.PostStop();
    }
}
