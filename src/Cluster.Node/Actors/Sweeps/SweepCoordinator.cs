using Akka.Actor;
using Akka.Event;
using Akka.Pattern;
using Akka.Persistence;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Hosting;
using Cluster.Node.Storage;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using Distill.Engine.Sweeps;

namespace Cluster.Node.Actors;

/// <summary>
/// The sweep coordinator, a persisted cluster singleton on the seed role. A trial is a run: it
/// submits each trial's run spec to the run coordinator, hears the runs' metrics and ends, hands
/// each report to the sweep's scheduler and journals the decision with it, stops trials the
/// scheduler stops (a cancel of their run), starts new ones from the searcher as places free up,
/// and writes sweeps/&lt;id&gt;/. Every 5 s it asks the run coordinator about its running trials, so
/// that a report or an end lost in a failover is caught up.
/// </summary>
public sealed partial class SweepCoordinator : ReceivePersistentActor, IWithTimers
{
    public const string Name = "sweep-coordinator";

    public const string JournalUnavailable = "the sweep journal is unavailable; the sweep coordinator restarts with backoff (1-10 s) until it is back: try again shortly";

    public static Props GetProps(NodeServices services) => Props.Create(() => new SweepCoordinator(services));

    /// <summary>As the cluster runs it: started again with backoff after a journal failure (see <see cref="RunCoordinator.GetSupervisedProps"/>).</summary>
    public static Props GetSupervisedProps(NodeServices services) => BackoffSupervisor.Props(
        Backoff.OnStop(GetProps(services), "coordinator", TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10), 0.2, maxNrOfRetries: -1)
            .WithReplyWhileStopped(new SweepRejected(JournalUnavailable))
            .WithSupervisorStrategy(RunCoordinator.StopOnFailure));

    private sealed record Tick : INoSerializationVerificationNeeded
    {
        public static readonly Tick Instance = new();
    }

    /// <summary>The run coordinator's answer about one trial's run (or why there is none).</summary>
    private sealed record RunChecked(string RunId, object Answer) : INoSerializationVerificationNeeded;

    private readonly NodeServices services;
    private readonly ILoggingAdapter log = Context.GetLogger();
    private SweepsState state = SweepsState.Empty;
    private readonly Dictionary<string, SweepRuntime> runtimes = [];
    /// <summary>Steps of running trials as the run coordinator last said (not persisted: for status only).</summary>
    private readonly Dictionary<string, long> liveSteps = [];
    /// <summary>Runs of running trials that the run coordinator last said wait for a slot (not persisted: asked again every 5 s).</summary>
    private readonly HashSet<string> queuedRuns = [];
    private readonly TrialCheckpoints checkpoints;
    private JournalWitness.Tracker? witness;
    private IActorRef? persistingFor;

    public ITimerScheduler Timers { get; set; } = null!;

    public override string PersistenceId => Name;

    public SweepCoordinator(NodeServices services)
    {
        this.services = services;
        checkpoints = new TrialCheckpoints(services.Blobs);
        Recover<IPersistedEvent>(e => state = state.Apply(e));
        Recover<RecoveryCompleted>(_ =>
        {
            witness = services.Witness.For(PersistenceId);
            if (witness.Recovered(LastSequenceNr) is { } loss)
            {
                log.Error("sweep coordinator: {0}", loss);
                Become(() => CommandAny(m =>
                {
                    if (m is SubmitSweep or GetSweepStatus or CancelSweep) Sender.Tell(new SweepRejected(loss));
                }));
                return;
            }
            log.Info("sweep coordinator up: {0} sweeps, {1} running", state.Sweeps.Count, state.Sweeps.Values.Count(s => s.Running));
            CancelReplacedRuns();
            Timers.StartPeriodicTimer("tick", Tick.Instance, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5));
        });

        Command<SubmitSweep>(OnSubmit);
        Command<GetSweepStatus>(m => Sender.Tell(new SweepStatusReport(state.Sweeps.Values
            .Where(s => m.SweepId is null || s.SweepId == m.SweepId).Select(Summary).ToArray())));
        Command<CancelSweep>(OnCancel);
        Command<TrialMetrics>(OnMetrics);
        Command<TrialRunEnded>(m => OnRunEnded(m.RunId, m.State, m.Steps, m.Accuracy, m.Message));
        Command<TrialRunPaused>(m => OnRunPaused(m.RunId, m.Step, m.Accuracy, m.StudentBlob, m.SourceBlob));
        Command<Tick>(_ => OnTick());
        Command<RunChecked>(OnRunChecked);
        Command<RunAccepted>(_ => { });
        Command<RunRejected>(r => log.Warning("sweep coordinator: the run coordinator refused a trial: {0}", r.Reason));
        Command<CancelAnswer>(_ => { });
        ReceiveFiles();
    }

    protected override bool AroundReceive(Receive receive, object message)
    {
        var handled = base.AroundReceive(receive, message);
        witness?.Acknowledged(LastSequenceNr);
        return handled;
    }

    private SweepRuntime Runtime(SweepRecord r)
    {
        if (!runtimes.TryGetValue(r.SweepId, out var rt)) runtimes[r.SweepId] = rt = SweepRuntime.Rebuild(r);
        return rt;
    }

    private void OnSubmit(SubmitSweep m)
    {
        SweepSpec spec;
        try { spec = SweepParser.Parse(m.SpecYaml, m.SpecFile); }
        catch (SpecException e) { Sender.Tell(new SweepRejected($"sweep spec refused: {e.Message}")); return; }
        // journalled with its base inline: a later edit of the base file changes nothing of this sweep
        var yaml = SweepParser.SelfContained(spec);
        var id = m.SweepId;
        if (id is not null)
        {
            if (EntityId.SweepIdProblem(id) is { } problem) { Sender.Tell(new SweepRejected(problem)); return; }
            if (state.Sweeps.TryGetValue(id, out var known))
            {
                Sender.Tell(known.SpecYaml == yaml ? new SweepAccepted(id, true)
                    : new SweepRejected($"sweep {id} exists with a different spec{SpecDiff.Describe(known.SpecYaml, yaml)}; choose another sweep id"));
                return;
            }
        }
        else
        {
            do id = RunIds.New(spec.Name);
            while (state.Sweeps.ContainsKey(id));
        }
        var sender = Sender;
        persistingFor = sender;
        Persist(new SweepSubmitted(id, yaml, m.SpecFile, DateTime.UtcNow, spec.Mode == "max"), e =>
        {
            persistingFor = null;
            state = state.Apply(e);
            log.Info("sweep {0} accepted: {1} over {2}, {3} search, {4} scheduler", id, spec.Base.Method.Name,
                string.Join(", ", spec.Space.Select(d => d.Path)), spec.Search.Kind, spec.Scheduler.Kind);
            sender.Tell(new SweepAccepted(id, false));
            Advance(id);
        });
    }

    private void OnCancel(CancelSweep m)
    {
        if (!state.Sweeps.TryGetValue(m.SweepId, out var r)) { Sender.Tell(new SweepRejected($"no sweep {m.SweepId}")); return; }
        var sender = Sender;
        if (!r.Running) { sender.Tell(new SweepStatusReport([Summary(r)])); return; }
        Record([new SweepEnded(r.SweepId, SweepState.Cancelled, $"cancelled: {m.Reason}", DateTime.UtcNow)], () =>
        {
            var now = state.Sweeps[m.SweepId];
            foreach (var t in now.Trials.Where(t => t.Live && t.RunId is not null))
                services.Coordinator.Tell(new CancelRun(t.RunId!, $"sweep {m.SweepId} cancelled: {m.Reason}"));
            sender.Tell(new SweepStatusReport([Summary(now)]));
        });
    }

    private void OnMetrics(TrialMetrics m)
    {
        if (!state.ByRun.TryGetValue(m.RunId, out var at) || !state.Sweeps.TryGetValue(at.SweepId, out var r)) return;
        if (r.Trial(at.TrialId) is not { } t || t.RunId != m.RunId) return;
        liveSteps[m.RunId] = Math.Max(liveSteps.GetValueOrDefault(m.RunId), m.Step);
        var rt = Runtime(r);
        var received = System.Diagnostics.Stopwatch.GetTimestamp();
        if (SweepDecisions.Report(r, rt, t, m.Step, m.Names, m.Values) is not { } e) return;
        Record([e], () =>
        {
            services.SweepDecisionTimes.Record(System.Diagnostics.Stopwatch.GetElapsedTime(received));
            if (e.Stop)
            {
                log.Info("sweep {0}: trial {1} stopped at step {2}: {3}", r.SweepId, t.TrialId, m.Step, e.Reason);
                services.Coordinator.Tell(new CancelRun(m.RunId, $"stopped by the {rt.Spec.Scheduler.Kind} scheduler: {e.Reason}"));
            }
        });
    }

    /// <summary>
    /// A trial's run paused at its rung or PBT interval: recorded (with PBT, its checkpoints there
    /// pinned in the trial's store first); promotions, exploits and new trials may follow.
    /// </summary>
    private void OnRunPaused(string runId, long step, double? accuracy, string? studentBlob = null, string? sourceBlob = null)
    {
        if (!state.ByRun.TryGetValue(runId, out var at) || !state.Sweeps.TryGetValue(at.SweepId, out var r)) return;
        if (r.Trial(at.TrialId) is not { } t) return;
        var rt = Runtime(r);
        if (SweepDecisions.Paused(r, rt, t, runId, step, accuracy) is not { } e) return;
        if (rt.Scheduler is PbtScheduler && studentBlob is not null && sourceBlob is not null)
        {
            try
            {
                checkpoints.Pin(r.SweepId, t.TrialId, runId, studentBlob, sourceBlob);
                e = e with { StudentBlob = studentBlob, SourceBlob = sourceBlob };
            }
            catch (Exception x) when (x is BlobException or IOException or UnauthorizedAccessException)
            {
                log.Warning("sweep {0}: trial {1}'s checkpoints at step {2} could not be kept ({3}); no trial copies it from there", r.SweepId, t.TrialId, step, x.Message);
            }
        }
        Record([e], () =>
        {
            log.Info("sweep {0}: trial {1} paused at rung {2} (step {3}): {4}", r.SweepId, t.TrialId, e.Rung, step, e.Value);
            Advance(r.SweepId);
        });
    }

    private void OnRunEnded(string runId, RunState runState, long steps, double? accuracy, string? message)
    {
        if (!state.ByRun.TryGetValue(runId, out var at) || !state.Sweeps.TryGetValue(at.SweepId, out var r)) return;
        if (r.Trial(at.TrialId) is not { } t) return;
        var rt = Runtime(r);
        if (SweepDecisions.RunEnded(r, rt, t, runId, runState, steps, accuracy, message) is not { } e) return;
        Record([e], () =>
        {
            if (e is TrialEnded ended)
            {
                rt.Scheduler.OnTrialEnded(t.TrialId);
                log.Info("sweep {0}: trial {1} {2} at step {3}{4}", r.SweepId, t.TrialId, state.Sweeps[r.SweepId].Trial(t.TrialId)!.State.ToString().ToLowerInvariant(),
                    steps, ended.Reason is { } why ? $": {why}" : "");
            }
            Advance(r.SweepId);
        });
    }

    /// <summary>Starts what may start, ends the sweep when nothing is left, and writes its files.</summary>
    private void Advance(string sweepId)
    {
        var r = state.Sweeps[sweepId];
        var rt = Runtime(r);
        var now = DateTime.UtcNow;
        if (r.Running && rt.Spec.Limits.MaxWallMinutes > 0 && (now - r.SubmittedUtc).TotalMinutes >= rt.Spec.Limits.MaxWallMinutes
            && r.Trials.Any(t => t.Live))
        {
            // out of time: running and paused trials stop; they end as cancelled and the sweep then completes
            foreach (var t in r.Trials.Where(t => t.Live && t.RunId is not null))
                services.Coordinator.Tell(new CancelRun(t.RunId!, $"sweep {sweepId}: max_wall_minutes {rt.Spec.Limits.MaxWallMinutes} reached"));
        }
        var events = Exploitable(r, SweepDecisions.Fill(r, rt, now));
        if (events.Count == 0) events.AddRange(SweepDecisions.Settle(r, rt, now));
        if (events.Count > 0)
        {
            Record(events, () => Advance(sweepId));
            return;
        }
        if (SweepDecisions.Finished(r, rt, now) is { } end)
        {
            Record([end], () =>
            {
                var done = state.Sweeps[sweepId];
                var best = SweepDecisions.Best(done, rt);
                log.Info("sweep {0} completed: {1} trials, best {2}", sweepId, done.Trials.Count,
                    best is { } b ? $"{b.Mean:F2}{(b.Std is { } sd ? $" ± {sd:F2}" : "")} ({string.Join(", ", rt.Config(b.Trials[0]).Values.Select(v => $"{v.Key}={v.Value}"))})" : "none");
                WriteFiles(done, rt, plots: true);
            });
            return;
        }
        WriteFiles(r, rt, plots: false);
    }

    /// <summary>Each new launch's run is submitted after its event is journalled; a submit lost on the way is caught up by the tick.</summary>
    private void Record(IReadOnlyList<IPersistedEvent> events, Action then)
    {
        var left = events.Count;
        PersistAll(events, e =>
        {
            // the trial as it was, for the events that pause, fork or end it
            var te = e as ITrialEvent;
            var before = e is TrialEnded or TrialExploited or TrialPaused ? state.Sweeps[te!.SweepId].Trial(te.TrialId) : null;
            state = state.Apply(e);
            if (e is TrialExploited x && before?.RunId is { } replaced)
            {
                services.Coordinator.Tell(new CancelRun(replaced, $"PBT: trial {x.TrialId} goes on as run {x.RunId} from {x.From}'s checkpoint at step {x.Step}"));
                SubmitTrial(state.Sweeps[x.SweepId], x.TrialId);
            }
            if (e is TrialExploited or TrialPaused && before is not null)
                checkpoints.Prune(te!.SweepId, before.TrialId, before.Blobs, state.Sweeps[te.SweepId].Trial(before.TrialId)!.Blobs);
            if (e is TrialEnded && before?.Blobs.Any(b => b is not null) == true) DropCheckpoints(te!.SweepId, before.TrialId);
            if (e is TrialLaunched l) SubmitTrial(state.Sweeps[l.SweepId], l.TrialId);
            if (e is TrialPromoted pr && state.Sweeps[pr.SweepId].Trial(pr.TrialId)?.RunId is { } promoted)
                services.Coordinator.Tell(new ResumeRun(promoted, pr.HoldAt));
            // a paused trial that ASHA stopped for good: its run ends (its entities let go of their state)
            if (e is TrialEnded && before is { State: TrialState.Paused, RunId: { } paused })
                services.Coordinator.Tell(new CancelRun(paused, $"stopped by the asha scheduler: {((TrialEnded)e).Reason}"));
            if (e is TrialReported p) Board(p, Runtime(state.Sweeps[p.SweepId]).Spec.Metric);
            if (--left == 0) then();
        });
    }

    private void SubmitTrial(SweepRecord r, string trialId)
    {
        var rt = Runtime(r);
        var t = r.Trial(trialId)!;
        var yaml = SweepParser.TrialYaml(rt.Spec, rt.Config(t), $"{rt.Spec.Name}-{t.TrialId}", t.Repeat);
        if (t.Fork is { } fork)
        {
            // the run's entities find the checkpoints it begins from in their own stores
            try { checkpoints.Seed(r.SweepId, t.TrialId, t.RunId!, rt.Spec.Base.Cluster.Replicas, fork); }
            catch (Exception e) when (e is BlobException or IOException or UnauthorizedAccessException)
            {
                log.Error("sweep {0}: trial {1}'s run {2} cannot begin from {3} at step {4}: {5}", r.SweepId, t.TrialId, t.RunId, fork.From, fork.Step, e.Message);
            }
        }
        services.Coordinator.Tell(new SubmitRun(yaml, rt.Spec.BaseFile, t.RunId, r.SweepId, t.HoldAt, t.Fork));
    }

    protected override void OnPersistFailure(Exception cause, object @event, long sequenceNr)
    {
        persistingFor?.Tell(new SweepRejected($"{JournalUnavailable} ({cause.GetBaseException().Message.Split('\n')[0].Trim()})"));
        persistingFor = null;
        base.OnPersistFailure(cause, @event, sequenceNr);
    }
}
