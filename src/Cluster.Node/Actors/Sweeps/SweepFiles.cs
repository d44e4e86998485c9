using System.Globalization;
using System.Text;
using System.Text.Json;
using Cluster.Contracts.Sweeps;
using Distill.Engine.Sweeps;

namespace Cluster.Node.Actors;

/// <summary>
/// sweeps/&lt;id&gt;/: sweep.yaml (as given), trials.csv (a row per trial, the hyperparameters as
/// columns), reports.csv (the scheduler's inputs in order), exploits.csv (PBT: each exploit, with
/// the configuration before and after), best.json, PNG plots, and tensorboard/&lt;trial&gt;/ (each
/// trial's reported metric, written by the coordinator as it comes).
/// </summary>
public static class SweepFiles
{
    /// <param name="plots">also the PNG plots (<see cref="SweepPlots"/>): at the sweep's end, and as trials end while there are few</param>
    public static void Write(string sweepsDir, SweepRecord r, SweepRuntime rt, bool plots)
    {
        var dir = Path.Combine(sweepsDir, r.SweepId);
        Directory.CreateDirectory(dir);
        Atomic(Path.Combine(dir, "sweep.yaml"), r.SpecYaml);
        Atomic(Path.Combine(dir, "trials.csv"), TrialsCsv(r, rt));
        Atomic(Path.Combine(dir, "reports.csv"), ReportsCsv(r));
        if (rt.Spec.Scheduler.Kind == "pbt") Atomic(Path.Combine(dir, "exploits.csv"), ExploitsCsv(r, rt));
        if (plots) SweepPlots.Write(dir, r, rt);
        var best = SweepDecisions.Best(r, rt);
        Atomic(Path.Combine(dir, "best.json"), JsonSerializer.Serialize(new
        {
            sweep_id = r.SweepId,
            state = r.State.ToString().ToLowerInvariant(),
            message = r.Message,
            metric = rt.Spec.Metric,
            mode = rt.Spec.Mode,
            trials = r.Trials.Count,
            student_steps = r.StudentSteps,
            wall_seconds = Math.Round(((r.EndedUtc ?? DateTime.UtcNow) - r.SubmittedUtc).TotalSeconds, 1),
            best = best is { } b ? new
            {
                config = rt.Spec.Space.Select((d, i) => (d.Path, Value: ResultsTable.JsonScalar(b.Trials[0].Values[i]))).ToDictionary(x => x.Path, x => x.Value),
                mean = b.Mean,
                std = b.Std,
                repeats = b.Trials.Length,
                trials = b.Trials.Select(t => t.TrialId).ToArray(),
                runs = b.Trials.Select(t => t.RunId).ToArray(),
            } : null,
        }, new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// PBT's history, as Ray Tune's pbt_policy files keep it: a row per exploit in the order decided
    /// (the trial, the step, the trial it copied, its new run, each hyperparameter before and after,
    /// and why). trials.csv holds only each trial's last configuration.
    /// </summary>
    public static string ExploitsCsv(SweepRecord r, SweepRuntime rt)
    {
        var sb = new StringBuilder();
        var paths = rt.Spec.Space.Select(d => d.Path).ToArray();
        sb.AppendLine(string.Join(',', new[] { "trial", "step", "from", "run" }.Concat(paths.Select(p => p + " before")).Concat(paths.Select(p => p + " after")).Append("reason")));
        foreach (var x in r.Exploits)
            sb.AppendLine(string.Join(',', new[] { x.TrialId, x.Step.ToString(CultureInfo.InvariantCulture), x.From, x.RunId }
                .Concat(x.Before).Concat(x.After).Append(Quote(x.Reason))));
        return sb.ToString();
    }

    public static string TrialsCsv(SweepRecord r, SweepRuntime rt)
    {
        var sb = new StringBuilder();
        sb.AppendLine(string.Join(',', new[] { "trial", "run" }.Concat(rt.Spec.Space.Select(d => d.Path))
            .Concat(["state", "step", rt.Spec.Metric, "best", "rungs", "attempt", "reason"])));
        foreach (var t in r.Trials)
            sb.AppendLine(string.Join(',', new[] { t.TrialId, t.RunId ?? "" }.Concat(t.Values)
                .Concat([t.State.ToString().ToLowerInvariant(), t.Step.ToString(CultureInfo.InvariantCulture), Num(t.Metric), Num(t.Best),
                    t.Rung.ToString(CultureInfo.InvariantCulture), t.Attempt.ToString(CultureInfo.InvariantCulture), Quote(t.Reason ?? "")])));
        return sb.ToString();
    }

    /// <summary>Every report in the order the scheduler decided it: what a fresh scheduler replays to the same decisions.</summary>
    public static string ReportsCsv(SweepRecord r)
    {
        var sb = new StringBuilder("trial,step,value\n");
        foreach (var p in r.Reports) sb.Append($"{p.TrialId},{p.Step.ToString(CultureInfo.InvariantCulture)},{p.Value.ToString("R", CultureInfo.InvariantCulture)}\n");
        return sb.ToString();
    }

    private static string Num(double? v) => v?.ToString("R", CultureInfo.InvariantCulture) ?? "";

    private static string Quote(string s) => s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;

    private static void Atomic(string path, string text)
    {
        var tmp = $"{path}.{Environment.ProcessId}.tmp";
        File.WriteAllText(tmp, text);
        File.Move(tmp, path, overwrite: true);
    }
}
