using System.Globalization;
using Akka.Actor;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Hosting;
using Distill.Engine.Runs;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Cluster.Seed.Terminal;

/// <summary>
/// How `run` and `sweep` show a run or sweep they serve: on a terminal, a live block (Spectre.Console)
/// with a progress bar, the step, rate, time left, the latest losses and accuracy; when stdout is
/// not a terminal (CI, kubectl logs), one plain line whenever the status changes, at most every
/// poll interval, with the same numbers.
/// </summary>
internal static class RunProgress
{
    private static readonly TimeSpan Poll = TimeSpan.FromSeconds(2);

    public static bool Interactive(TextWriter stdout) =>
        ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>Until the run ends; its metrics.csv (in runDir) gives the latest losses.</summary>
    public static async Task<RunSummary> FollowRunAsync(IActorRef coordinator, string runId, string runDir, TextWriter stdout, CancellationToken ct)
    {
        var follow = new RunLines(reasonElsewhere: true);
        var metrics = new MetricsTail(Path.Combine(runDir, "metrics.csv"));
        async Task<RunSummary?> Next()
        {
            try { return (await RunClient.StatusAsync(coordinator, runId, TimeSpan.FromSeconds(20), ct)).FirstOrDefault(); }
            catch (Exception e) when (e is AskTimeoutException or CoordinatorUnavailableException) { return null; }
        }

        if (!Interactive(stdout))
        {
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                if (await Next() is { } s)
                {
                    // the status line as `status` prints it, then what it lacks: the rate, time left and losses
                    if (follow.Next(s, () => ProgressMeter.Losses(metrics.Latest("student-0"))) is { } line) stdout.WriteLine(line);
                    if (s.State.Ended()) return s;
                }
                await Task.Delay(Poll, ct);
            }
        }
        // a live block of short lines (a long description in a progress column is cut to "…")
        RunSummary? final = null;
        IRenderable View(RunSummary? s)
        {
            if (s is null) return new Markup($"[bold]{Markup.Escape(runId)}[/] [grey]asking the coordinator…[/]");
            follow.Next(s);   // measures it (the live view shows every answer)
            var width = Math.Clamp(AnsiConsole.Profile.Width - 30, 10, 50);
            var done = s.TotalSteps > 0 ? Math.Clamp((double)s.StudentStep / s.TotalSteps, 0, 1) : 0;
            var filled = (int)Math.Round(done * width);
            var colour = s.State switch { RunState.Completed => "green", RunState.Failed => "red", RunState.Cancelled => "grey", _ => "blue" };
            var meter = follow.Meter;
            var rate = meter.Rate is { } r ? $"{r.ToString(r < 10 ? "F2" : "F1", CultureInfo.InvariantCulture)} steps/s" : "– steps/s";
            var eta = meter.Eta(s.StudentStep) is { } e && s.State == RunState.Training ? $"ETA {ProgressMeter.Clock(e)}" : "";
            var lines = new List<IRenderable>
            {
                new Markup($"[bold]{Markup.Escape(runId)}[/] [{colour}]{Markup.Escape(s.State.Name())}[/] {Markup.Escape(s.Method)}"),
                new Markup($"[{colour}]{new string('━', filled)}[/][grey]{new string('━', width - filled)}[/] {100 * done,5:F1}%  {s.StudentStep}/{s.TotalSteps}  {rate}  {eta}"),
            };
            var numbers = new List<string>();
            if (ProgressMeter.Losses(metrics.Latest("student-0")) is { Length: > 0 } losses) numbers.Add(losses);
            if (s.StudentAccuracy is { } a) numbers.Add($"student {a:F2}%");
            if (s.TeacherAccuracy is { } t) numbers.Add($"teacher {t:F2}%");
            if (numbers.Count > 0) lines.Add(new Markup(Markup.Escape(string.Join("  ", numbers))));
            if (s.Message is { } m) lines.Add(new Markup($"[grey]{Markup.Escape(m)}[/]"));
            return new Rows(lines);
        }
        await AnsiConsole.Live(View(null)).AutoClear(false).StartAsync(async ctx =>
        {
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                if (await Next() is { } s)
                {
                    ctx.UpdateTarget(View(s));
                    if (s.State.Ended()) { final = s; return; }
                }
                await Task.Delay(Poll, ct);
            }
        });
        return final!;
    }

    /// <summary>Until the sweep ends: a bar over its trials, and the trials table whenever it changes.</summary>
    public static async Task<SweepSummary> FollowSweepAsync(IActorRef sweeps, string sweepId, TextWriter stdout, CancellationToken ct)
    {
        if (!Interactive(stdout)) return await SweepClient.FollowAsync(sweeps, sweepId, stdout, Poll, ct);
        SweepSummary? final = null;
        await AnsiConsole.Progress().AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(sweepId), maxValue: 1);
                while (true)
                {
                    ct.ThrowIfCancellationRequested();
                    SweepSummary? s = null;
                    try { s = (await SweepClient.StatusAsync(sweeps, sweepId, TimeSpan.FromSeconds(20), ct)).FirstOrDefault(); }
                    catch (Exception e) when (e is AskTimeoutException or CoordinatorUnavailableException) { }
                    if (s is not null)
                    {
                        var ended = s.Trials.Count(t => t.State is TrialState.Completed or TrialState.Stopped or TrialState.Failed or TrialState.Cancelled);
                        var running = s.Trials.Where(t => t.State == TrialState.Running).Select(t => $"{t.TrialId}@{t.Step}");
                        var best = s.Trials.Select(t => t.Best).OfType<double>().DefaultIfEmpty(double.NaN);
                        var bestValue = s.Mode == "min" ? best.Min() : best.Max();
                        task.MaxValue = Math.Max(1, s.Trials.Length);
                        task.Value = ended;
                        // short: a description wider than its column is cut to "…"
                        task.Description = Markup.Escape($"{sweepId}: {ended}/{s.Trials.Length} trials, {running.Count()} running, best " +
                                                         (double.IsNaN(bestValue) ? "-" : bestValue.ToString("0.####", CultureInfo.InvariantCulture)));
                        if (s.State != SweepState.Running) { task.StopTask(); final = s; return; }
                    }
                    await Task.Delay(Poll, ct);
                }
            });
        stdout.Write(SweepClient.Table(final!));
        return final!;
    }

    /// <summary>The newest row per phase of a metrics.csv another thread appends to, read from where the last read stopped.</summary>
    private sealed class MetricsTail(string path)
    {
        private long offset;
        private MetricsCsvReader reader = new();
        private readonly Dictionary<string, IReadOnlyDictionary<string, double>> latest = [];
        private string partial = "";

        public IReadOnlyDictionary<string, double>? Latest(string phase)
        {
            Read();
            return latest.GetValueOrDefault(phase);
        }

        private void Read()
        {
            try
            {
                if (!File.Exists(path)) return;
                using var s = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                if (s.Length < offset) (offset, reader, partial) = (0, new MetricsCsvReader(), "");
                s.Position = offset;
                using var r = new StreamReader(s);
                var text = partial + r.ReadToEnd();
                offset = s.Length;
                var lines = text.Split('\n');
                partial = lines[^1];
                foreach (var line in lines[..^1])
                    if (reader.Read(line) is { } row) latest[row.Phase] = row.Values;
            }
            catch (IOException) { }   // the next poll reads it
        }
    }
}
