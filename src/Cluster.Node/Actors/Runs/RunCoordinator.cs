using System.Text.Json;
using Akka.Actor;
using Akka.Pattern;
using Akka.Event;
using Akka.Persistence;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Cluster.Node.Storage;
using Distill.Engine.Methods;
using Distill.Engine.Runs;
using Distill.Engine.Specs;

namespace Cluster.Node.Actors;

/// <summary>
/// The run coordinator, a persisted cluster singleton on the seed role. It accepts run specs,
/// has the teacher prepared, starts the generator and student entities (sharding places them on
/// GPU nodes), tracks their progress and writes the run's result. Starting an entity is
/// idempotent, so after a failover or a full restart it simply starts every unfinished run's
/// entities again, and each resumes from its own persisted state.
/// </summary>
public sealed partial class RunCoordinator : ReceivePersistentActor, IWithTimers
{
    public const string Name = "run-coordinator";

    public static Props GetProps(NodeServices services) => Props.Create(() => new RunCoordinator(services));

    /// <summary>What a client is told while the coordinator is down after a journal failure.</summary>
    public const string JournalUnavailable = "the run journal is unavailable; the run coordinator restarts with backoff (1-10 s) until it is back: try again shortly";

    /// <summary>
    /// The coordinator as the cluster runs it: Akka.Persistence stops a persistent actor whose
    /// journal write or recovery fails, and a backoff supervisor starts it again (1 s, doubling to
    /// 10 s: back within seconds of the journal, and a retry every 10 s costs a down database
    /// nothing), so that it comes back once the journal does; meanwhile every question is answered
    /// with <see cref="JournalUnavailable"/> instead of silence.
    /// </summary>
    public static Props GetSupervisedProps(NodeServices services) => BackoffSupervisor.Props(
        Backoff.OnStop(GetProps(services), "coordinator", TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10), 0.2, maxNrOfRetries: -1)
            .WithReplyWhileStopped(new RunRejected(JournalUnavailable))
            .WithSupervisorStrategy(StopOnFailure));

    /// <summary>
    /// Any exception stops the coordinator, so that it comes back with the same backoff as after a
    /// journal failure: restarted at once, a failure that recurs at start-up (a write that cannot
    /// succeed) became a hot loop.
    /// </summary>
    internal static readonly OneForOneStrategy StopOnFailure = new(_ => Directive.Stop);

    private sealed record Nudge : INoSerializationVerificationNeeded
    {
        public static readonly Nudge Instance = new();
    }

    /// <summary>Writes the status.json files that a throttled report left behind their run's figures.</summary>
    private sealed record FlushStatus : INoSerializationVerificationNeeded
    {
        public static readonly FlushStatus Instance = new();
    }

    private readonly NodeServices services;
    private readonly ILoggingAdapter log = Context.GetLogger();
    private CoordinatorState state = CoordinatorState.Empty;
    /// <summary>Live progress by run (not persisted: the entities report it again).</summary>
    private readonly Dictionary<string, Live> live = [];
    private int eventsSinceSnapshot;
    /// <summary>Who waits for the event being persisted (a submit or a cancel), told if the write fails.</summary>
    private IActorRef? persistingFor;
    /// <summary>Parsed specs by run (parsing YAML on every status question costs CPU the engine needs).</summary>
    private readonly Dictionary<string, RunSpec> specs = [];

    /// <summary>
    /// Open run directories: the coordinator alone writes metrics.csv, events.log and samples/ for
    /// the entities wherever they run, so that one file has one writer.
    /// </summary>
    private readonly Dictionary<string, RunDirectory> dirs = [];

    private RunDirectory Dir(string runId) =>
        dirs.TryGetValue(runId, out var d) ? d : dirs[runId] = new RunDirectory(Path.Combine(services.Options.RunsDir, runId));

    private void CloseDir(string runId)
    {
        if (dirs.Remove(runId, out var d)) d.Dispose();
        ledgers.Remove(runId);
    }

    protected override void PostStop()
    {
        if (Clustered) Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);
        // a stop (Ctrl+C, a hand-over) leaves each run's status.json at its last report, not one throttled away
        try { FlushStatuses(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { log.Warning("status.json not written at stop: {0}", e.Message); }
        foreach (var d in dirs.Values) d.Dispose();
        dirs.Clear();
        base.PostStop();
    }

    private RunSpec SpecOf(RunRecord r) => specs.TryGetValue(r.RunId, out var s) ? s : specs[r.RunId] = SpecParser.Parse(r.SpecYaml, r.SpecFile);

    public RunCoordinator(NodeServices services)
    {
        this.services = services;
        Recover<SnapshotOffer>(o => { if (o.Snapshot is CoordinatorSnapshot s) state = CoordinatorState.FromSnapshot(s); });
        Recover<IPersistedEvent>(e => state = state.Apply(e));
        Recover<RecoveryCompleted>(_ =>
        {
            witness = services.Witness.For(PersistenceId);
            if (witness.Recovered(LastSequenceNr) is { } loss)
            {
                // no run is started, redone or skipped on a journal that lost events: every question gets the reason
                log.Error("run coordinator: {0}", loss);
                Become(() => CommandAny(m =>
                {
                    if (m is SubmitRun or CancelRun or GetRunStatus or GetRunLayout) Sender.Tell(new RunRejected(loss));
                }));
                return;
            }
            log.Info("run coordinator up: {0} runs, {1} unfinished", state.Runs.Count, state.Active.Count());
            RunStateGauges();
            if (services.Options.ResumeRuns) Timers.StartPeriodicTimer("nudge", Nudge.Instance, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10));
        });

        Command<SubmitRun>(OnSubmit);
        Command<CancelRun>(OnCancel);
        Command<TeacherReady>(OnTeacherReady);
        Command<EntityProgress>(OnProgress);
        Command<StudentFinished>(OnFinished);
        Command<EntityFailed>(OnFailed);
        Command<StudentHeld>(OnHeld);
        Command<HeldWithSource>(OnHeldWithSource);
        Command<ResumeRun>(OnResume);
        Command<RunMetrics>(OnMetrics);
        Command<RunSamples>(OnSamples);
        Command<GetRunStatus>(m => Sender.Tell(new RunStatusReport(state.Runs.Values
            .Where(r => m.RunId is null || r.RunId == m.RunId).Select(Summary).ToArray())));
        Command<FlushStatus>(_ => FlushStatuses());
        Command<Nudge>(_ =>
        {
            foreach (var r in state.Active) StartEntities(r);
            Admit();
        });
        Command<GetRunLayout>(m =>
        {
            if (!state.Runs.TryGetValue(m.RunId, out var r)) { Sender.Tell(new RunLayout(m.RunId, false, null, null, [])); return; }
            var layout = SpecOf(r).Cluster.Layout;
            Sender.Tell(new RunLayout(m.RunId, true, layout.Generator, layout.Teacher, layout.Student));
        });
        Command<GetBusyRuns>(_ => Sender.Tell(new BusyRuns(state.Active.Where(RunDecisions.HoldsSlot).Select(r => r.RunId).ToArray())));
        ReceiveMembership();
        ReceiveSnapshots();
    }

    public override string PersistenceId => "run-coordinator";

    public ITimerScheduler Timers { get; set; } = null!;

    private void OnSubmit(SubmitRun m)
    {
        var d = RunDecisions.Submit(state, m, () => SpecParser.Parse(m.SpecYaml, m.SpecFile), DateTime.UtcNow,
            id => RunDirectory.PriorWork(Path.Combine(services.Options.RunsDir, id)));
        var sender = Sender;
        if (d.Event is not RunSubmitted submitted) { sender.Tell(d.Reply); return; }
        persistingFor = sender;
        PersistAndSnapshot(submitted, () =>
        {
            var spec = SpecOf(state.Runs[submitted.RunId]);
            var dir = Dir(submitted.RunId);
            dir.WriteSpec(spec);
            dir.Event($"run {submitted.RunId} accepted: method {spec.Method.Name}, spec {m.SpecFile}, device {spec.Device}, seed {spec.Seed}" +
                (m.Fork is { } fork ? $"; begins at step {fork.Step} from the checkpoints of {fork.From}" : ""));
            log.Info("run {0} accepted ({1})", submitted.RunId, m.SpecFile);
            if (submitted.BaselineYaml is not null) BaselineAccepted(submitted);
            sender.Tell(d.Reply);
            WriteStatus(state.Runs[submitted.RunId], throttle: false);
            Admit();
        });
    }

    /// <summary>A user's cancel: persisted, final; the run's entities stop for good.</summary>
    private void OnCancel(CancelRun m)
    {
        var d = RunDecisions.Cancel(state, m, DateTime.UtcNow);
        var sender = Sender;
        if (d.Event is null) { sender.Tell(d.Reply); return; }
        persistingFor = sender;
        PersistAndSnapshot(d.Event, () =>
        {
            Cancelled(m.RunId, m.Reason);
            sender.Tell(d.Reply);
        });
    }

    /// <summary>A cancel persisted: the run's entities stop for good, and its baseline's run goes with it.</summary>
    private void Cancelled(string runId, string reason)
    {
        // someone asked for it (a user, a sweep's scheduler): news, not a warning
        log.Info("run {0} cancelled: {1}", runId, reason);
        Dir(runId).Event($"cancelled: {reason}");
        CloseDir(runId);
        WriteStatus(state.Runs[runId], throttle: false);
        StopEntities(state.Runs[runId]);
        TellSweep(state.Runs[runId]);
        EndBaseline(runId);
        Admit();
    }

    private void OnTeacherReady(TeacherReady m)
    {
        if (RunDecisions.TeacherReady(state, m).Event is not { } e) return;
        PersistAndSnapshot(e, () =>
        {
            log.Info("run {0}: teacher ready, {1:F2}% test accuracy", m.RunId, m.Accuracy);
            var dir = Dir(m.RunId);
            var how = m.FromCache switch { true => $", from the cache in {m.Seconds:F1} s", false => $", prepared in {m.Seconds:F1} s", null => "" };
            dir.Event($"teacher ready: {m.Accuracy:F2}% test accuracy{how}");
            // the run directory holds the teacher it used (the teacher entity's node may not share this disk)
            // (a copy the entities can restore a lost teacher blob from: written whole or not at all)
            try
            {
                if (services.Blobs.Exists(m.TeacherBlob))
                {
                    File.WriteAllBytes(dir.File("teacher.pt.tmp"), services.Blobs.Get(m.TeacherBlob));
                    File.Move(dir.File("teacher.pt.tmp"), dir.File("teacher.pt"), overwrite: true);
                }
            }
            catch (Exception x) when (x is BlobException or IOException)
            {
                log.Warning("run {0}: teacher.pt not written: {1}", m.RunId, x.Message);
                dir.Event($"teacher.pt not written: {x.Message}");
            }
            StartEntities(state.Runs[m.RunId]);
        });
    }

    private void OnFinished(StudentFinished m)
    {
        if (RunDecisions.StudentFinished(state, m, DateTime.UtcNow).Event is not { } e) return;
        PersistAndSnapshot(e, () =>
        {
            var done = state.Runs[m.RunId];
            WriteResult(done, m);
            if (done.BaselineOf is { } of) BaselineInto(of, m.RunId);
            WriteStatus(done, throttle: false);
            Dir(m.RunId).Event($"done: student {m.Accuracy:F2}% (best {m.BestAccuracy:F2}%) after {m.Steps} steps, {m.Rollbacks} rollback(s)");
            CloseDir(m.RunId);
            log.Info("run {0} completed: student {1:F2}% (best {2:F2}%) after {3} steps", m.RunId, m.Accuracy, m.BestAccuracy, m.Steps);
            StopEntities(done);
            TellSweep(done);
            Admit();
        });
    }

    private void OnFailed(EntityFailed m)
    {
        if (RunDecisions.EntityFailed(state, m).Event is not { } e) return;
        PersistAndSnapshot(e, () =>
        {
            log.Error("run {0} failed: {1}: {2}", m.RunId, m.EntityId, m.Reason);
            Dir(m.RunId).Event($"failed: {m.EntityId}: {m.Reason}");
            CloseDir(m.RunId);
            WriteStatus(state.Runs[m.RunId], throttle: false);
            // a failed run stays failed: its entities stop for good
            StopEntities(state.Runs[m.RunId]);
            TellSweep(state.Runs[m.RunId]);
            EndBaseline(m.RunId);
            Admit();
        });
    }

    /// <summary>A trial's run ended: its sweep hears how (it also asks, should this be lost).</summary>
    private void TellSweep(RunRecord r)
    {
        if (r.SweepId is not { } sweep) return;
        var s = Summary(r);
        services.Sweeps.Tell(new TrialRunEnded(sweep, r.RunId, s.State, s.StudentStep, s.StudentAccuracy, s.Message));
    }
}
