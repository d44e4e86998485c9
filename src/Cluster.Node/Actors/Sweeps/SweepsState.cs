using System.Collections.Immutable;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;

namespace Cluster.Node.Actors;

/// <summary>A trial as the sweep coordinator holds it.</summary>
public sealed record TrialRecord(
    string TrialId, long Index, int Repeat, string[] Values, TrialState State, string? RunId, int Attempt,
    long Step, double? Metric, double? Best, int Rung, string? Reason, long Reported = -1, bool EndRecorded = false,
    ImmutableList<double>? RungValues = null, long? HoldAt = null,
    ImmutableList<long>? PauseStepValues = null, ForkPoint? Pin = null, ForkPoint? Fork = null, long Start = 0, long Spent = 0, int Generation = 0, long? MetricAt = null)
{
    /// <summary>The metric at each pause (an ASHA rung, a PBT interval), in order.</summary>
    public ImmutableList<double> Rungs => RungValues ?? [];

    /// <summary>The step of each pause, beside <see cref="Rungs"/>.</summary>
    public ImmutableList<long> PauseSteps => PauseStepValues ?? [];

    /// <summary>Training now or waiting at a pause: not ended, and not waiting for its first start.</summary>
    public bool Live => State is TrialState.Running or TrialState.Paused;

    /// <summary>Student steps it trained: its earlier runs' (PBT) and the current one's since it began.</summary>
    public long Trained => Spent + Step - Start;

    /// <summary>The blobs its store keeps: its pin's and its fork's.</summary>
    public IEnumerable<string?> Blobs => [Pin?.StudentBlob, Pin?.SourceBlob, Fork?.StudentBlob, Fork?.SourceBlob];

    public bool Ended => State is TrialState.Completed or TrialState.Stopped or TrialState.Failed or TrialState.Cancelled;
}

/// <summary>A PBT exploit: at Step, TrialId went on from From's checkpoint, its configuration changed from Before to After, as run RunId.</summary>
public sealed record ExploitRecord(string TrialId, long Step, string From, string[] Before, string[] After, string RunId, string Reason);

/// <summary>A report, in the order the scheduler decided it (replayed into a new scheduler on recovery).</summary>
public sealed record ReportRecord(string TrialId, long Step, double Value);

/// <summary>A sweep's persisted state. Pure: events in, a new state out.</summary>
public sealed record SweepRecord(
    string SweepId, string SpecYaml, string SpecFile, DateTime SubmittedUtc, bool Maximize, SweepState State, string? Message, DateTime? EndedUtc,
    ImmutableList<TrialRecord> Trials, ImmutableList<ReportRecord> Reports, ImmutableList<(string TrialId, int Position)> Endings,
    ImmutableDictionary<string, int> TrialIndex, ImmutableList<ExploitRecord>? ExploitList = null)
{
    /// <summary>PBT's exploits in the order decided: the sweep's history of configurations (exploits.csv).</summary>
    public ImmutableList<ExploitRecord> Exploits => ExploitList ?? [];

    public bool Running => State == SweepState.Running;

    /// <summary>Configurations the searcher has made (a configuration has one trial per repeat).</summary>
    public long Configurations => Trials.Count == 0 ? 0 : Trials[^1].Index + 1;   // made in index order

    /// <summary>A trial by id (an index, not a scan: a sweep may hold many thousands).</summary>
    public TrialRecord? Trial(string trialId) => TrialIndex.TryGetValue(trialId, out var i) ? Trials[i] : null;

    public long StudentSteps => Trials.Sum(t => t.Trained);
}

/// <summary>Every sweep the coordinator accepted.</summary>
public sealed record SweepsState(ImmutableSortedDictionary<string, SweepRecord> Sweeps, ImmutableDictionary<string, (string SweepId, string TrialId)> ByRun)
{
    public static readonly SweepsState Empty = new(ImmutableSortedDictionary<string, SweepRecord>.Empty, ImmutableDictionary<string, (string, string)>.Empty);

    public SweepsState Apply(IPersistedEvent e) => e switch
    {
        SweepSubmitted s => this with
        {
            Sweeps = Sweeps.SetItem(s.SweepId, new SweepRecord(s.SweepId, s.SpecYaml, s.SpecFile, s.SubmittedUtc, s.Maximize, SweepState.Running, null, null, [], [], [], ImmutableDictionary<string, int>.Empty)),
        },
        TrialCreated c => Update(c.SweepId, r => r with
        {
            Trials = r.Trials.Add(new TrialRecord(c.TrialId, c.Index, c.Repeat, c.Values, TrialState.Pending, null, 0, 0, null, null, 0, null)),
            TrialIndex = r.TrialIndex.SetItem(c.TrialId, r.Trials.Count),
        }),
        // an attempt after a failure begins where the failed run began (step 0, or its PBT fork): the steps since are spent
        TrialLaunched l => UpdateTrial(l.SweepId, l.TrialId, t => (l.Attempt > 1 ? t with { Spent = t.Trained, Step = t.Start, Reported = t.Start > 0 ? t.Start : -1 } : t)
            with { State = TrialState.Running, RunId = l.RunId, Attempt = l.Attempt, HoldAt = l.HoldAt }) with
        {
            ByRun = ByRun.SetItem(l.RunId, (l.SweepId, l.TrialId)),
        },
        TrialReported p => Update(p.SweepId, r => r with { Reports = r.Reports.Add(new ReportRecord(p.TrialId, p.Step, p.Value)) })
            .UpdateTrial(p.SweepId, p.TrialId, t => t with
            {
                Step = Math.Max(t.Step, p.Step), Metric = p.Value, MetricAt = p.Step, Rung = Math.Max(t.Rung, p.Rung), Reported = Math.Max(t.Reported, p.Step),
                State = p.Stop && !t.Ended ? TrialState.Stopped : t.State,
                Reason = p.Stop ? p.Reason : t.Reason,
            }),
        TrialEnded x => Update(x.SweepId, r => r with { Endings = r.Endings.Add((x.TrialId, r.Reports.Count)) })
            .UpdateTrial(x.SweepId, x.TrialId, t => t with
            {
                // a trial the scheduler stopped stays Stopped when its cancelled run ends
                State = t.State == TrialState.Stopped ? TrialState.Stopped : x.State,
                Step = Math.Max(t.Step, x.Steps), Metric = x.Metric ?? t.Metric, MetricAt = x.Metric is null ? t.MetricAt : x.Steps, EndRecorded = true, Reason = t.State == TrialState.Stopped ? t.Reason : x.Reason ?? t.Reason,
            }),
        TrialPaused p => UpdateTrial(p.SweepId, p.TrialId, t => t with
        {
            State = t.Ended ? t.State : TrialState.Paused, Step = Math.Max(t.Step, p.Step), Metric = p.Value, MetricAt = p.Step, Rung = p.Rung,
            RungValues = t.Rungs.Add(p.Value), PauseStepValues = t.PauseSteps.Add(p.Step), Reason = $"paused at step {p.Step} (pause {p.Rung + 1}), for the scheduler",
            // a pause whose checkpoints were not kept leaves none to copy (not an older one, whose step the score is not for)
            Pin = p.StudentBlob is { } sb && p.SourceBlob is { } src ? new ForkPoint($"trial {t.TrialId}", p.Step, sb, src) : null,
        }),
        TrialExploited x => Update(x.SweepId, r => r.Trial(x.TrialId) is { } before
                ? r with { ExploitList = r.Exploits.Add(new ExploitRecord(x.TrialId, x.Step, x.From, before.Values, x.Values, x.RunId, x.Reason)) }
                : r)
            .UpdateTrial(x.SweepId, x.TrialId, t => t with
        {
            State = TrialState.Running, Values = x.Values, RunId = x.RunId, Attempt = 1, HoldAt = x.HoldAt, Reason = x.Reason,
            Spent = t.Trained, Start = x.Step, Step = x.Step, Reported = x.Step, Generation = t.Generation + 1,
            Fork = new ForkPoint($"trial {x.From}", x.Step, x.StudentBlob, x.SourceBlob),
            Pin = null,   // its own pause's checkpoints are not what it now trains: nobody copies them
        }) with
        {
            ByRun = ByRun.SetItem(x.RunId, (x.SweepId, x.TrialId)),
        },
        TrialPromoted p => UpdateTrial(p.SweepId, p.TrialId, t => t with { State = TrialState.Running, HoldAt = p.HoldAt, Reason = p.Reason }),
        SweepEnded x => Update(x.SweepId, r => r with { State = x.State, Message = x.Reason, EndedUtc = x.EndedUtc }),
        _ => throw new ArgumentException($"{e.GetType().Name} is not a sweep event"),
    };

    private SweepsState Update(string sweepId, Func<SweepRecord, SweepRecord> f) =>
        Sweeps.TryGetValue(sweepId, out var r) ? this with { Sweeps = Sweeps.SetItem(sweepId, f(r)) } : this;

    private SweepsState UpdateTrial(string sweepId, string trialId, Func<TrialRecord, TrialRecord> f) => Update(sweepId, r =>
    {
        if (!r.TrialIndex.TryGetValue(trialId, out var i)) return r;
        var updated = f(r.Trials[i]);
        var best = updated.Metric is { } m && (updated.Best is null || Better(r, m, updated.Best.Value)) ? m : updated.Best;
        return r with { Trials = r.Trials.SetItem(i, updated with { Best = best }) };
    });

    private static bool Better(SweepRecord r, double value, double best) => r.Maximize ? value > best : value < best;
}
