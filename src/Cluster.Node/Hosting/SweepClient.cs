using System.Globalization;
using System.Text;
using Akka.Actor;
using Cluster.Contracts;
using Cluster.Contracts.Sweeps;

namespace Cluster.Node.Hosting;

/// <summary>Submits sweeps to the sweep coordinator and follows them (the sweep, submit and status commands).</summary>
public static class SweepClient
{
    public static async Task<SweepAccepted> SubmitAsync(IActorRef sweeps, string yaml, string specFile, string? sweepId, TimeSpan timeout) =>
        await sweeps.Ask<ISweepCommand>(new SubmitSweep(yaml, specFile, sweepId), timeout) switch
        {
            SweepAccepted a => a,
            SweepRejected r => throw new InvalidOperationException(r.Reason),
            var other => throw new InvalidOperationException($"unexpected answer {other.GetType().Name}"),
        };

    public static async Task<SweepSummary[]> StatusAsync(IActorRef sweeps, string? sweepId, TimeSpan timeout, CancellationToken ct = default) =>
        await sweeps.Ask<ISweepCommand>(new GetSweepStatus(sweepId), timeout, ct) switch
        {
            SweepStatusReport r => r.Sweeps,
            SweepRejected r => throw new CoordinatorUnavailableException(r.Reason),
            var other => throw new InvalidOperationException($"unexpected answer {other.GetType().Name}"),
        };

    public static async Task<SweepSummary> CancelAsync(IActorRef sweeps, string sweepId, string reason, TimeSpan timeout) =>
        await sweeps.Ask<ISweepCommand>(new CancelSweep(sweepId, reason), timeout) switch
        {
            SweepStatusReport { Sweeps: [var s] } => s,
            SweepRejected r => throw new InvalidOperationException(r.Reason),
            var other => throw new InvalidOperationException($"unexpected answer {other.GetType().Name}"),
        };

    /// <summary>Polls until the sweep ends, writing it as a log (<see cref="SweepProgressLog"/>).</summary>
    public static async Task<SweepSummary> FollowAsync(IActorRef sweeps, string sweepId, TextWriter log, TimeSpan poll, CancellationToken ct = default)
    {
        var progress = new SweepProgressLog();
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            SweepSummary? s = null;
            try { s = (await StatusAsync(sweeps, sweepId, TimeSpan.FromSeconds(20), ct)).FirstOrDefault(); }
            catch (AskTimeoutException) { log.WriteLine("[status] the sweep coordinator did not answer in 20 s (failing over?); asking again"); }
            catch (CoordinatorUnavailableException e) { log.WriteLine($"[status] {e.Message}; asking again"); }
            if (s is not null)
            {
                log.Write(progress.Next(s, DateTime.UtcNow));
                if (s.State != SweepState.Running) return s;
            }
            await Task.Delay(poll, ct);
        }
    }

    /// <summary>The trials table: trial, hyperparameters, state, step, metric, best, rung; then the sweep's line.</summary>
    public static string Table(SweepSummary s)
    {
        string[] head = ["trial", .. s.Paths, "state", "step", s.Metric, "at step", "best", "rungs", "reason"];
        var rows = s.Trials.Select(t => new[] { t.TrialId }.Concat(t.Values.Select(Distill.Engine.Sweeps.ResultsTable.Display))
            .Concat([t.State.ToString().ToLowerInvariant() + (t.Attempt > 1 ? $" (attempt {t.Attempt})" : "")])
            .Concat([t.Step.ToString(CultureInfo.InvariantCulture)])
            .Concat([Num(t.Metric), t.Metric is null ? "" : t.MetricStep?.ToString(CultureInfo.InvariantCulture) ?? "-", Num(t.Best), t.Rung.ToString(CultureInfo.InvariantCulture), Short(t.Reason)]).ToArray()).ToList();
        var widths = head.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        var sb = new StringBuilder();
        sb.AppendLine($"[sweep {s.SweepId}] {s.State.ToString().ToLowerInvariant()}: {s.Trials.Length} trial{(s.Trials.Length == 1 ? "" : "s")}, " +
                      $"{s.Trials.Count(t => t.State == TrialState.Running)} running, " +
                      (s.Trials.Count(t => t.State == TrialState.Queued) is > 0 and var q ? $"{q} waiting for a slot, " : "") + $"{s.StudentSteps:N0} student steps" + (s.Message is { } m ? $" ({m})" : ""));
        sb.AppendLine(string.Join("  ", head.Select((h, i) => h.PadRight(widths[i]))).TrimEnd());
        foreach (var r in rows) sb.AppendLine(string.Join("  ", r.Select((c, i) => c.PadRight(widths[i]))).TrimEnd());
        return sb.ToString();
    }

    private static string Num(double? v) => v?.ToString("0.####", CultureInfo.InvariantCulture) ?? "-";

    private static string Short(string? s) => s is null ? "" : s.Length <= 60 ? s : s[..57] + "...";
}
