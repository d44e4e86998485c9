using System.Globalization;
using Cluster.Contracts.Sweeps;
using Distill.Engine.Sweeps;
using ScottPlot;

namespace Cluster.Node.Actors;

/// <summary>
/// A sweep's PNG plots (ScottPlot): the metric over student steps for every trial (stopped trials
/// dashed, so that where they stopped shows), and the metric at each trial's end against each swept
/// hyperparameter (log axis for a loguniform one, the listed values for a list).
/// </summary>
public static class SweepPlots
{
    public const int Width = 1000, Height = 560;

    /// <summary>Writes metric.png and &lt;metric&gt;_vs_&lt;path&gt;.png into dir; returns the files written.</summary>
    public static IReadOnlyList<string> Write(string dir, SweepRecord r, SweepRuntime rt)
    {
        var files = new List<string> { Curves(Path.Combine(dir, "metric.png"), r, rt) };
        for (var i = 0; i < rt.Spec.Space.Count; i++)
            files.Add(Against(Path.Combine(dir, $"{Safe(rt.Spec.Metric)}_vs_{Safe(rt.Spec.Space[i].Path)}.png"), r, rt, i));
        return files;
    }

    private static string Safe(string s) => new(s.Select(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' ? c : '_').ToArray());

    private static string Curves(string file, SweepRecord r, SweepRuntime rt)
    {
        var plot = new Plot();
        foreach (var t in r.Trials)
        {
            var points = r.Reports.Where(p => p.TrialId == t.TrialId).OrderBy(p => p.Step).ToArray();
            if (points.Length == 0) continue;
            var line = plot.Add.Scatter(points.Select(p => (double)p.Step).ToArray(), points.Select(p => p.Value).ToArray());
            line.LegendText = $"{t.TrialId} ({t.State.ToString().ToLowerInvariant()})";
            if (t.State == TrialState.Stopped) line.LinePattern = LinePattern.Dashed;
        }
        plot.Title($"{rt.Spec.Name}: {rt.Spec.Metric} over student steps ({rt.Spec.Scheduler.Kind}; dashed: stopped)");
        plot.XLabel("student step");
        plot.YLabel(rt.Spec.Metric);
        // beside the curves, not over them; past 30 trials a legend is unreadable anyway
        if (r.Trials.Count <= 30) plot.ShowLegend(Edge.Right);
        plot.SavePng(file, Width, Height);
        return file;
    }

    private static string Against(string file, SweepRecord r, SweepRuntime rt, int dim)
    {
        var d = rt.Spec.Space[dim];
        var ended = r.Trials.Where(t => t.Metric is not null && t.State is TrialState.Completed or TrialState.Stopped).ToArray();
        var plot = new Plot();
        double X(string v) => d switch
        {
            RangeDimension { Log: true } => Math.Log10(double.Parse(v, CultureInfo.InvariantCulture)),
            RangeDimension or IntDimension => double.Parse(v, CultureInfo.InvariantCulture),
            _ => d.Values!.ToList().IndexOf(v),
        };
        foreach (var (state, group) in ended.GroupBy(t => t.State).Select(g => (g.Key, g.ToArray())))
        {
            var points = plot.Add.ScatterPoints(group.Select(t => X(t.Values[dim])).ToArray(), group.Select(t => t.Metric!.Value).ToArray());
            points.LegendText = state.ToString().ToLowerInvariant();
            points.MarkerSize = 9;
        }
        if (d is ChoiceDimension or GridDimension)
            plot.Axes.Bottom.SetTicks(Enumerable.Range(0, d.Values!.Count).Select(i => (double)i).ToArray(), d.Values!.ToArray());
        plot.Title($"{rt.Spec.Name}: {rt.Spec.Metric} at each trial's end against {d.Path}");
        plot.XLabel(d is RangeDimension { Log: true } ? $"log10 {d.Path}" : d.Path);
        plot.YLabel(rt.Spec.Metric);
        plot.ShowLegend(Alignment.LowerRight);
        plot.SavePng(file, Width, Height);
        return file;
    }
}
