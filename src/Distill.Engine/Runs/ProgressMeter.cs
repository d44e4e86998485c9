using System.Globalization;

namespace Distill.Engine.Runs;

/// <summary>
/// Rate and time left of a run that has taken `step` of `total` steps: steps per second over the
/// last `window` of (time, step) samples, so that a slow start or a pause does not stay in the
/// rate. A step that goes back (a rollback, a failover) restarts the window.
/// </summary>
public sealed class ProgressMeter(long total, TimeSpan? window = null)
{
    private readonly double windowSeconds = (window ?? TimeSpan.FromSeconds(30)).TotalSeconds;
    private readonly Queue<(double Seconds, long Step)> samples = new();

    public long Total { get; } = total;

    public void Add(double seconds, long step)
    {
        if (samples.Count > 0 && step < samples.Last().Step) samples.Clear();
        samples.Enqueue((seconds, step));
        while (samples.Count > 2 && seconds - samples.Peek().Seconds > windowSeconds) samples.Dequeue();
    }

    /// <summary>Steps per second over the window; null until two samples a step apart.</summary>
    public double? Rate
    {
        get
        {
            if (samples.Count < 2) return null;
            var (t0, s0) = samples.Peek();
            var (t1, s1) = samples.Last();
            return s1 > s0 && t1 > t0 ? (s1 - s0) / (t1 - t0) : null;
        }
    }

    /// <summary>Time left at the current rate; null without one.</summary>
    public TimeSpan? Eta(long step) => Rate is { } r && r > 0 ? TimeSpan.FromSeconds(Math.Max(0, Total - step) / r) : null;

    /// <summary>"step 120/3000 (4.0%), 12.3 steps/s, ETA 3:54" with what is known.</summary>
    public string Describe(long step)
    {
        var pct = Total > 0 ? $" ({100.0 * step / Total:F1}%)" : "";
        return $"step {step}/{Total}{pct}{Pace(step, ", ")}";
    }

    /// <summary>What a status line that already gives the step lacks: "4.0%, 12.3 steps/s, ETA 3:54" with what is known.</summary>
    public string Pace(long step) => ((Total > 0 ? $"{100.0 * step / Total:F1}%" : "") + Pace(step, ", ")).TrimStart(',', ' ');

    private string Pace(long step, string separator)
    {
        var rate = Rate is { } r ? $"{separator}{r.ToString(r < 10 ? "F2" : "F1", CultureInfo.InvariantCulture)} steps/s" : "";
        var eta = Eta(step) is { } e ? $"{separator}ETA {Clock(e)}" : "";
        return rate + eta;
    }

    /// <summary>h:mm:ss, or m:ss under an hour.</summary>
    public static string Clock(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t.Minutes:D2}:{t.Seconds:D2}" : $"{t.Minutes}:{t.Seconds:D2}";

    /// <summary>The losses among a step's values, as "loss_kd=0.1234 kl_kd=0.05" (at most `max`).</summary>
    public static string Losses(IReadOnlyDictionary<string, double>? values, int max = 3) =>
        values is null ? "" : string.Join(" ", values.Where(kv => kv.Key.StartsWith("loss", StringComparison.Ordinal) || kv.Key.StartsWith("kl_", StringComparison.Ordinal))
            .OrderBy(kv => kv.Key, StringComparer.Ordinal).Take(max).Select(kv => $"{kv.Key}={kv.Value.ToString("G4", CultureInfo.InvariantCulture)}"));
}
