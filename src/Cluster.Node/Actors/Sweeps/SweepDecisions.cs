using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Distill.Engine.Sweeps;

namespace Cluster.Node.Actors;

/// <summary>
/// A sweep's parsed spec, searcher and scheduler. Not persisted: rebuilt from the sweep's record,
/// whose reports and endings are replayed into a new scheduler in the order they were decided.
/// </summary>
public sealed class SweepRuntime
{
    public SweepSpec Spec { get; }
    public Searcher Searcher { get; }
    public Scheduler Scheduler { get; }

    private SweepRuntime(SweepSpec spec)
    {
        Spec = spec;
        Searcher = Searcher.For(spec);
        Scheduler = Scheduler.For(spec);
    }

    public static SweepRuntime Rebuild(SweepRecord r)
    {
        var rt = new SweepRuntime(SweepParser.Parse(r.SpecYaml, r.SpecFile));
        var endings = r.Endings.ToLookup(e => e.Position, e => e.TrialId);
        for (var i = 0; i <= r.Reports.Count; i++)
        {
            foreach (var t in endings[i]) rt.Scheduler.OnTrialEnded(t);
            if (i < r.Reports.Count)
            {
                var p = r.Reports[i];
                rt.Scheduler.OnReport(new TrialReport(p.TrialId, p.Step, rt.Spec.Score(p.Value), rt.Config(r.Trial(p.TrialId)!)));
            }
        }
        return rt;
    }

    /// <summary>ASHA's rung steps (promote mode pauses trials there).</summary>
    public long[] Milestones => milestones ??= AshaPromotions.Milestones(Spec.Scheduler);
    private long[]? milestones;

    public TrialConfig Config(TrialRecord t) => new(Spec.Space.Select((d, i) => new KeyValuePair<string, string>(d.Path, t.Values[i])).ToArray());

    /// <summary>What the searcher has learnt: every ended configuration's last metric (only a model-based searcher reads it).</summary>
    public IReadOnlyList<Observation> Observations(SweepRecord r) => Searcher is not TpeSearcher ? [] : r.Trials
        .Where(t => t.State is TrialState.Completed or TrialState.Stopped && t.Metric is not null)
        .Select(t => new Observation(Config(t), Spec.Score(t.Metric!.Value))).ToArray();
}

/// <summary>The sweep coordinator's decisions, pure functions of a sweep's record and runtime: events out.</summary>
public static class SweepDecisions
{
    public static string TrialId(long index, int repeat, int repeats) => repeats == 1 ? $"t{index:D4}" : $"t{index:D4}r{repeat}";

    /// <summary>A trial's run: one per attempt, and per generation (each PBT exploit begins a new one).</summary>
    public static string RunId(string sweepId, string trialId, int attempt, int generation = 0) =>
        $"{sweepId}-{trialId}{(generation > 0 ? $"-g{generation}" : "")}{(attempt > 1 ? $"-a{attempt}" : "")}";

    /// <summary>Why the sweep makes no more trials (null: it may): the search is done or a budget is spent.</summary>
    public static string? Exhausted(SweepRecord r, SweepRuntime rt, DateTime now)
    {
        var limits = rt.Spec.Limits;
        if (limits.MaxTrials > 0 && r.Trials.Count >= limits.MaxTrials) return $"max_trials {limits.MaxTrials} reached";
        if (BudgetSpent(r, rt, now) is { } spent) return spent;
        if (rt.Searcher.Total is { } total && r.Configurations >= total) return "the search made all of its configurations";
        return null;
    }

    /// <summary>Why no trial may start now (max_student_steps or max_wall_minutes spent), or null while one may.</summary>
    public static string? BudgetSpent(SweepRecord r, SweepRuntime rt, DateTime now)
    {
        var limits = rt.Spec.Limits;
        if (limits.MaxStudentSteps > 0 && r.StudentSteps >= limits.MaxStudentSteps) return $"max_student_steps {limits.MaxStudentSteps:N0} reached";
        if (limits.MaxWallMinutes > 0 && (now - r.SubmittedUtc).TotalMinutes >= limits.MaxWallMinutes) return $"max_wall_minutes {limits.MaxWallMinutes} reached";
        return null;
    }

    /// <summary>
    /// A trial launched whose run still waits for a slot and never trained, once a budget is spent:
    /// it does not start (cancelled, with the reason), as a trial still pending would not. A trial
    /// going on from a pause or a PBT fork is a running one, and finishes.
    /// </summary>
    public static TrialEnded? NotStarted(SweepRecord r, SweepRuntime rt, TrialRecord t, RunState run, DateTime now) =>
        r.Running && t.State == TrialState.Running && run == RunState.Queued && t.Trained == 0 && t.PauseSteps.Count == 0 && t.Fork is null
        && BudgetSpent(r, rt, now) is { } spent
            ? new TrialEnded(r.SweepId, t.TrialId, TrialState.Cancelled, 0, null, $"not started: {spent} while its run waited for a slot")
            : null;

    /// <summary>
    /// The trials to launch now: pending ones first, then new configurations from the searcher
    /// (one trial per repeat), while fewer than max_concurrent run and no budget is spent.
    /// </summary>
    public static List<IPersistedEvent> Fill(SweepRecord r, SweepRuntime rt, DateTime now)
    {
        var events = new List<IPersistedEvent>();
        if (!r.Running) return events;
        var running = r.Trials.Count(t => t.State == TrialState.Running);
        var free = rt.Spec.Limits.MaxConcurrent - running;
        // promotions first (Li et al.'s get_job), one at a time: the next is decided on the state it leaves
        if (free > 0 && rt.Spec.Scheduler.Promotes && AshaPromotions.Next(RungTrials(r, rt), rt.Milestones, rt.Spec.Scheduler.ReductionFactor) is { } p)
            return [new TrialPromoted(r.SweepId, p.TrialId, p.HoldAt, p.Reason)];
        // PBT: a paused trial goes on (as it is, or from a better one's checkpoint) before anything new
        // starts, those furthest behind first so that the population stays together
        if (rt.Scheduler is PbtScheduler pbt)
            foreach (var t in r.Trials.Where(t => t.State == TrialState.Paused).OrderBy(t => t.Step).ThenBy(t => t.TrialId, StringComparer.Ordinal))
            {
                if (pbt.EndsAt(t.Step)) { events.Add(new TrialEnded(r.SweepId, t.TrialId, TrialState.Stopped, t.Step, null, $"reached max_steps {rt.Spec.Scheduler.MaxSteps}")); continue; }
                if (rt.Spec.Scheduler.Synch)
                {
                    // the whole cohort at a step is decided on one state (its trials then queue for
                    // slots), so that no decision depends on which was decided first
                    if (StillToPause(r, t.Step) || MoreToCome(r, rt, now)) break;   // trials not made yet will pause there too
                    events.Add(AtPause(r, rt, pbt, t));
                    free--;
                    continue;
                }
                if (free <= 0) return events;
                events.Add(AtPause(r, rt, pbt, t));
                free--;
            }
        foreach (var t in r.Trials.Where(t => t.State == TrialState.Pending))
        {
            // a budget spent: the pending repeats of the last configuration made never start
            if (BudgetSpent(r, rt, now) is { } spent)
            {
                events.Add(new TrialEnded(r.SweepId, t.TrialId, TrialState.Cancelled, 0, null, $"not started: {spent}"));
                continue;
            }
            if (free <= 0) return events;
            events.Add(new TrialLaunched(r.SweepId, t.TrialId, RunId(r.SweepId, t.TrialId, 1), 1, FirstHold(rt)));
            free--;
        }
        var index = r.Configurations;
        var observations = rt.Observations(r);
        var made = r.Trials.Count;
        while (free > 0 && Exhausted(r, rt, now) is null)
        {
            if (rt.Spec.Limits.MaxTrials > 0 && made >= rt.Spec.Limits.MaxTrials) break;
            if (rt.Searcher.Suggest(index, observations) is not { } config) break;
            for (var repeat = 0; repeat < rt.Spec.Repeats; repeat++)
            {
                var id = TrialId(index, repeat, rt.Spec.Repeats);
                events.Add(new TrialCreated(r.SweepId, id, index, repeat, config.Values.Select(v => v.Value).ToArray()));
                made++;
                if (free > 0)
                {
                    events.Add(new TrialLaunched(r.SweepId, id, RunId(r.SweepId, id, 1), 1, FirstHold(rt)));
                    free--;
                }
            }
            index++;
        }
        return events;
    }

    private static long? FirstHold(SweepRuntime rt) =>
        rt.Spec.Scheduler.Promotes ? AshaPromotions.HoldAfter(rt.Milestones, 0) : rt.Scheduler is PbtScheduler pbt ? pbt.HoldAfter(0) : null;

    /// <summary>Whether a trial not ended may still pause at `step` (synchronous PBT waits for it): one not started, paused before it, or running towards it.</summary>
    private static bool StillToPause(SweepRecord r, long step) => r.Trials.Any(x =>
        x.State == TrialState.Pending || x.State == TrialState.Paused && x.Step < step || x.State == TrialState.Running && x.HoldAt is { } h && h <= step);

    /// <summary>
    /// PBT at a trial's pause: it goes on to its next pause as it is, or (exploit and explore) as a
    /// new run that begins from a top trial's pinned checkpoints with that trial's configuration perturbed.
    /// </summary>
    public static IPersistedEvent AtPause(SweepRecord r, SweepRuntime rt, PbtScheduler pbt, TrialRecord t)
    {
        var population = r.Trials.Where(x => x.RunId is not null && x.PauseSteps.Count > 0 && x.State is not (TrialState.Failed or TrialState.Cancelled))
            .Select(x => new PbtTrial(x.TrialId,
                x.PauseSteps.Zip(x.Rungs, (step, value) => (Step: step, Value: value)).GroupBy(p => p.Step).ToDictionary(g => g.Key, g => rt.Spec.Score(g.Last().Value)),
                x.Live && x.Pin is { } pin && !pbt.EndsAt(pin.Step) && (!rt.Spec.Scheduler.Synch || pin.Step == t.Step) ? pin.Step : null, rt.Config(x)))
            .ToArray();
        var d = pbt.AtPause(t.TrialId, t.Step, population, (t.Index * 1_009L + t.Repeat) * 7_919L + t.Generation);
        if (!d.Exploit || r.Trial(d.Source!) is not { Pin: { } pin })
            return new TrialPromoted(r.SweepId, t.TrialId, pbt.HoldAfter(t.Step), d.Reason);
        return new TrialExploited(r.SweepId, t.TrialId, d.Source!, pin.Step, d.Config!.Values.Select(v => v.Value).ToArray(),
            RunId(r.SweepId, t.TrialId, 1, t.Generation + 1), pbt.HoldAfter(pin.Step), pin.StudentBlob, pin.SourceBlob, d.Reason);
    }

    /// <summary>The trials as promotion-based ASHA sees them (scores: higher is better).</summary>
    public static IReadOnlyList<RungTrial> RungTrials(SweepRecord r, SweepRuntime rt) => r.Trials
        .Where(t => t.RunId is not null)
        .Select(t => new RungTrial(t.TrialId, t.Rungs.Select(rt.Spec.Score).ToArray(), t.State switch
        {
            TrialState.Running => RungPosition.Running,
            TrialState.Paused => RungPosition.Paused,
            TrialState.Completed => RungPosition.Done,
            _ => RungPosition.Out,
        })).ToArray();

    /// <summary>
    /// Nothing runs and nothing new will start: the paused trials of the highest rung are settled
    /// (the best goes on if none went past that rung, else they stop there).
    /// </summary>
    public static IReadOnlyList<IPersistedEvent> Settle(SweepRecord r, SweepRuntime rt, DateTime now)
    {
        if (!r.Running || !rt.Spec.Scheduler.Promotes || r.Trials.Any(t => t.State is TrialState.Pending or TrialState.Running)) return [];
        if (MoreToCome(r, rt, now)) return [];
        return AshaPromotions.Settle(RungTrials(r, rt), rt.Milestones).Select(d => d.Promote
            ? (IPersistedEvent)new TrialPromoted(r.SweepId, d.TrialId, d.HoldAt, d.Reason)
            : new TrialEnded(r.SweepId, d.TrialId, TrialState.Stopped, r.Trial(d.TrialId)!.Step, null, d.Reason)).ToArray();
    }

    /// <summary>A trial's run paused at its rung: the metric there (reported at that step, else the accuracy the pause carried).</summary>
    public static TrialPaused? Paused(SweepRecord r, SweepRuntime rt, TrialRecord t, string runId, long step, double? accuracy)
    {
        if (t.RunId != runId || t.State != TrialState.Running || t.HoldAt != step) return null;
        var value = t.Reported == step && t.Metric is { } m ? m : rt.Spec.IsAccuracy ? accuracy : null;
        // no finite metric there (a lost report, a NaN loss): the pause counts as the worst score, so
        // that the trial is decided (ASHA does not promote it; PBT has it copy a better one) instead of waiting for ever
        var v = value is { } x && double.IsFinite(x) ? x : rt.Spec.Mode == "max" ? double.NegativeInfinity : double.PositiveInfinity;
        var rung = rt.Scheduler is PbtScheduler ? t.PauseSteps.Count : Array.IndexOf(rt.Milestones, step);
        return new TrialPaused(r.SweepId, t.TrialId, step, v, rung);
    }

    /// <summary>The sweep is over when no trial is pending, running or paused and no more will be made.</summary>
    public static SweepEnded? Finished(SweepRecord r, SweepRuntime rt, DateTime now)
    {
        if (!r.Running || r.Trials.Any(t => t.State is TrialState.Pending or TrialState.Running or TrialState.Paused)) return null;
        if (MoreToCome(r, rt, now)) return null;
        return new SweepEnded(r.SweepId, SweepState.Completed, Exhausted(r, rt, now) ?? "the search made all of its configurations", now);
    }

    /// <summary>Whether the searcher would still make a configuration (no budget spent, the search not done).</summary>
    private static bool MoreToCome(SweepRecord r, SweepRuntime rt, DateTime now) =>
        Exhausted(r, rt, now) is null && rt.Searcher.Suggest(r.Configurations, rt.Observations(r)) is not null;

    /// <summary>A metrics row of a running trial: reported to the scheduler once per step, in step order, when it carries the metric.</summary>
    public static TrialReported? Report(SweepRecord r, SweepRuntime rt, TrialRecord t, long step, IReadOnlyList<string> names, IReadOnlyList<double> values)
    {
        if (t.State != TrialState.Running) return null;
        var i = names.ToList().IndexOf(rt.Spec.Metric);
        if (i < 0 || !double.IsFinite(values[i])) return null;
        if (t.Reported >= step) return null;
        var d = rt.Scheduler.OnReport(new TrialReport(t.TrialId, step, rt.Spec.Score(values[i]), rt.Config(t)));
        var rung = rt.Spec.Scheduler.Kind == "asha" && !rt.Spec.Scheduler.Promotes ? rt.Milestones.Count(m => m <= step) : t.Rung;
        return new TrialReported(r.SweepId, t.TrialId, step, values[i], d.Verdict == Verdict.Stop, d.Reason, rung);
    }

    /// <summary>A trial's run ended: the trial ends with it, or (a failure within max_failures) runs again.</summary>
    public static IPersistedEvent? RunEnded(SweepRecord r, SweepRuntime rt, TrialRecord t, string runId, RunState state, long steps, double? accuracy, string? message)
    {
        if (t.RunId != runId || t.Ended && t.State != TrialState.Stopped) return null;
        if (t.State == TrialState.Stopped)
            return t.EndRecorded ? null : new TrialEnded(r.SweepId, t.TrialId, TrialState.Stopped, steps, null, null);
        var metric = rt.Spec.IsAccuracy ? accuracy : null;
        return state switch
        {
            RunState.Completed => new TrialEnded(r.SweepId, t.TrialId, TrialState.Completed, steps, metric, null),
            RunState.Failed when t.Attempt <= rt.Spec.Limits.MaxFailures && r.Running =>
                new TrialLaunched(r.SweepId, t.TrialId, RunId(r.SweepId, t.TrialId, t.Attempt + 1, t.Generation), t.Attempt + 1,
                    rt.Spec.Scheduler.Promotes ? AshaPromotions.HoldAfter(rt.Milestones, t.Rungs.Count)
                    : rt.Scheduler is PbtScheduler pbt ? pbt.HoldAfter(t.Start) : null),
            RunState.Failed => new TrialEnded(r.SweepId, t.TrialId, TrialState.Failed, steps, null,
                $"failed {t.Attempt} time(s), max_failures {rt.Spec.Limits.MaxFailures}: {message}"),
            RunState.Cancelled => new TrialEnded(r.SweepId, t.TrialId, TrialState.Cancelled, steps, null, message),
            _ => null,
        };
    }

    /// <summary>The best configuration by the mean of its trials' last metric over repeats, with the standard deviation.</summary>
    public static (TrialRecord[] Trials, double Mean, double? Std)? Best(SweepRecord r, SweepRuntime rt)
    {
        var groups = r.Trials.Where(t => t.Metric is not null && t.State is TrialState.Completed or TrialState.Stopped)
            .GroupBy(t => t.Index)
            .Select(g => (Trials: g.ToArray(), Mean: g.Average(t => t.Metric!.Value), Std: ResultsTable.SampleStd(g.Select(t => t.Metric!.Value).ToArray())))
            .ToArray();
        if (groups.Length == 0) return null;
        return rt.Spec.Mode == "max" ? groups.MaxBy(g => g.Mean) : groups.MinBy(g => g.Mean);
    }

    /// <summary>
    /// What `status` shows of a sweep. A trial's step is its run's latest report where that is ahead
    /// of the journal (`live`, by run id), and the header's total is counted from the same steps, so
    /// that the rows and the header describe one moment.
    /// </summary>
    /// <param name="queued">runs that the run coordinator last said wait for a slot: their running trials show as queued</param>
    public static SweepSummary Summary(SweepRecord r, SweepRuntime? rt, IReadOnlyDictionary<string, long> live, IReadOnlySet<string>? queued = null)
    {
        long Step(TrialRecord t) => Math.Max(t.Step, t.RunId is null ? 0 : live.GetValueOrDefault(t.RunId));
        return new SweepSummary(r.SweepId, rt?.Spec.Name ?? r.SweepId, r.State, rt?.Spec.Metric ?? "", rt?.Spec.Mode ?? "",
            rt?.Spec.Space.Select(d => d.Path).ToArray() ?? [],
            r.Trials.Select(t => new TrialSummary(t.TrialId, t.RunId ?? "", t.Values, Shown(t, queued), Step(t), t.Metric, t.Best, t.Rung, t.Attempt, t.Reason, t.MetricAt)).ToArray(),
            r.Trials.Sum(t => t.Trained + Step(t) - t.Step), r.Message);
    }

    /// <summary>A trial's state as status shows it: running, or queued while its run waits for a slot.</summary>
    public static TrialState Shown(TrialRecord t, IReadOnlySet<string>? queued) =>
        t.State == TrialState.Running && t.RunId is { } run && queued?.Contains(run) == true ? TrialState.Queued : t.State;
}
