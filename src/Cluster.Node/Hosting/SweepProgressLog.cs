using System.Globalization;
using System.Text;
using Cluster.Contracts.Sweeps;

namespace Cluster.Node.Hosting;

/// <summary>
/// A followed sweep as a log (kubectl logs, CI): one line whenever a trial starts, pauses at a
/// rung, is promoted, stops, completes or fails, with its metric and the scheduler's whole reason;
/// the trials table first, at most once a minute while trials change, and at the end.
/// </summary>
public sealed class SweepProgressLog(TimeSpan? tableEvery = null)
{
    private readonly TimeSpan tableEvery = tableEvery ?? TimeSpan.FromMinutes(1);
    private readonly Dictionary<string, (TrialState State, int Rung, int Attempt, string? Reason)> seen = [];
    private DateTime? lastTable;
    private bool changedSinceTable;

    /// <summary>What to write for this poll's summary (empty when nothing changed).</summary>
    public string Next(SweepSummary s, DateTime now)
    {
        var sb = new StringBuilder();
        foreach (var t in s.Trials)
        {
            var mark = (t.State, t.Rung, t.Attempt, t.Reason);
            if (seen.TryGetValue(t.TrialId, out var was) && was == mark) continue;
            seen[t.TrialId] = mark;
            changedSinceTable = true;
            if (lastTable is null) continue;   // the first table shows it
            sb.AppendLine(Line(s, t));
        }
        var ended = s.State != SweepState.Running;
        if (lastTable is null || ended || changedSinceTable && now - lastTable >= tableEvery)
        {
            sb.Append(SweepClient.Table(s));
            (lastTable, changedSinceTable) = (now, false);
        }
        return sb.ToString();
    }

    /// <summary>"[sweep S] t0003 (lr=0.001, T=4) paused at step 47, test_accuracy 78.26 (best 78.26), rung 0: reason".</summary>
    public static string Line(SweepSummary s, TrialSummary t)
    {
        var values = string.Join(", ", s.Paths.Zip(t.Values, (p, v) => $"{p}={Distill.Engine.Sweeps.ResultsTable.Display(v)}"));
        var state = t.State.ToString().ToLowerInvariant() + (t.Attempt > 1 ? $" (attempt {t.Attempt})" : "");
        var metric = t.Metric is { } m ? $", {s.Metric} {Num(m)}" + (t.MetricStep is { } at && at != t.Step ? $" (at step {at})" : "") + (t.Best is { } b && b != m ? $" (best {Num(b)})" : "") : "";
        return $"[sweep {s.SweepId}] {t.TrialId} ({values}) {state} at step {t.Step}{metric}, rung {t.Rung}" + (t.Reason is { } r ? $": {r}" : "");
    }

    private static string Num(double v) => v.ToString("0.####", CultureInfo.InvariantCulture);
}
