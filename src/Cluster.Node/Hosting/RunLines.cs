using System.Diagnostics;
using Cluster.Contracts.Runs;
using Distill.Engine.Runs;

namespace Cluster.Node.Hosting;

/// <summary>
/// A followed run as plain lines (`run` off a terminal, `submit --follow`): its status line whenever
/// it changes, then the rate and time left, measured from the student's reports. Nothing is printed
/// before the student's first report (until then the coordinator says step 0, which a resumed run is
/// not at, and 0 then 100 two seconds later would read as 50 steps/s); an ended run gets the share of
/// its steps it took instead of a rate.
/// </summary>
/// <param name="reasonElsewhere">A failed or cancelled run's reason is the caller's own last line, not the status line's.</param>
/// <param name="seconds">The clock answers are timed by (a stopwatch started here by default).</param>
public sealed class RunLines(bool reasonElsewhere = false, Func<double>? seconds = null)
{
    private readonly Func<double> seconds = seconds ?? StartClock();
    private string? last;

    /// <summary>Rate and time left over the student's reports so far.</summary>
    public ProgressMeter Meter { get; private set; } = new(0);

    private static Func<double> StartClock()
    {
        var watch = Stopwatch.StartNew();
        return () => watch.Elapsed.TotalSeconds;
    }

    /// <summary>Measures an answer; returns its line, or null when it shows nothing new. `extra`: what follows the pace (the latest losses).</summary>
    public string? Next(RunSummary s, Func<string>? extra = null)
    {
        if (Meter.Total != s.TotalSteps) Meter = new ProgressMeter(s.TotalSteps);
        if (s.State == RunState.Training && s.StudentStep > 0) Meter.Add(this.seconds(), s.StudentStep);
        var status = RunClient.Format(reasonElsewhere && s.State is RunState.Failed or RunState.Cancelled ? s with { Message = null } : s);
        if (status == last || s.State == RunState.Training && s.Node is null) return null;
        last = status;
        var pace = s.State.Ended() ? (s.TotalSteps > 0 ? $"{100.0 * s.StudentStep / s.TotalSteps:F1}%" : "") : Meter.Pace(s.StudentStep);
        var parts = new[] { pace, extra?.Invoke() ?? "" }.Where(p => p.Length > 0).ToList();
        return status + (parts.Count == 0 ? "" : " | " + string.Join(", ", parts));
    }
}
