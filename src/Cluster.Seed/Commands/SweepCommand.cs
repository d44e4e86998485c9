using System.CommandLine;
using Cluster.Contracts;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using Distill.Engine.Sweeps;

namespace Cluster.Seed.Commands;

/// <summary>`sweep`: a sweep embedded in this process, through a one-node cluster (SQLite journal in the sweep's directory), as `run` does for a run.</summary>
public static class SweepCommand
{
    public static Command Create(TextWriter stdout)
    {
        var spec = CommandLine.SpecArgument<string>("sweep", "the sweep spec (YAML)");
        var sweepsDir = new Option<string>("--sweeps-dir") { Description = "folder of sweep directories", DefaultValueFactory = _ => "sweeps" };
        var sweepId = SweepIdOption("the sweep's id; the same id resumes an interrupted sweep");
        var command = new Command("sweep", "run a sweep embedded in this process (writes sweeps/<sweep-id>/: the trials' runs, trials.csv, best.json); " +
                                           "the same --sweep-id resumes it where it was")
            { spec, sweepsDir, sweepId };
        command.SetAction(async (p, ct) =>
        {
            var file = p.GetValue(spec)!;
            var sweep = SweepParser.Load(file);   // refused here, with the reason, before anything is written
            // the trials read the base spec's files in this process: what it lacks is refused now, not by every trial
            ValidateCommand.RequireFiles(file, sweep);
            var yaml = sweep.SourceText;
            var root = p.GetValue(sweepsDir)!;
            var id = p.GetValue(sweepId) ?? RunIds.New(sweep.Name);
            EmbeddedRun.Folder(root, "--sweeps-dir");
            var dir = EmbeddedRun.Folder(Path.Combine(root, id), "--sweeps-dir");
            using var held = EmbeddedRun.Hold(dir, $"sweep {id}", "--sweep-id");
            await EmbeddedRun.KeepSpec(dir, yaml, $"sweep {id}", "the spec it was started with", "--sweep-id", ct);
            var options = new NodeOptions
            {
                Persistence = PersistenceOptions.Sqlite(Path.Combine(dir, "journal.db")),
                StoreDir = Path.Combine(dir, "blobs"),
                RunsDir = Path.Combine(dir, "runs"),
                SweepsDir = root,
                LogLevel = "WARNING",
                // this process is the whole cluster: it takes the sweep's max_concurrent trials at once
                Roles = [Roles.Seed, Roles.Gpu, Roles.SlotsPrefix + sweep.Limits.MaxConcurrent],
            };
            stdout.WriteLine($"[sweep] {id}: {sweep.Base.Method.Name} over {string.Join(", ", sweep.Space.Select(d => $"{d.Path} ({d.Kind})"))}; " +
                             $"{sweep.Search.Kind} search{(sweep.SearchTrials is { } n ? $" of {n * sweep.Repeats} trials" : "")}, {sweep.Scheduler.Kind} scheduler, " +
                             $"{sweep.Limits.MaxConcurrent} at once (embedded one-node cluster, journal {options.Persistence.ConnectionString.Split(';')[0]})");
            await using var node = await ClusterNode.StartAsync(options);
            SweepSummary final;
            try
            {
                // the file it came from, so that a relative base spec is found
                await SweepClient.SubmitAsync(node.Sweeps, yaml, Path.GetFullPath(file), id, TimeSpan.FromSeconds(60));
                final = await Terminal.RunProgress.FollowSweepAsync(node.Sweeps, id, stdout, ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // Ctrl+C also starts the actor system's shutdown (Akka's CLR hook), so the sweep's best.json, not its
                // coordinator, says whether it had ended: an interrupt that comes as it ends leaves its result
                if (EndedInFiles(dir) is not { } ended)
                {
                    stdout.WriteLine($"[sweep] {id} interrupted; its state is saved in {dir}: resume it with --sweep-id {id}");
                    return 130;
                }
                stdout.WriteLine($"[result] {Path.Combine(root, id, "trials.csv")}, {Path.Combine(root, id, "best.json")}");
                return ended.State == "completed" && ended.HasBest ? 0 : 1;
            }
            stdout.WriteLine($"[result] {Path.Combine(root, id, "trials.csv")}, {Path.Combine(root, id, "best.json")}");
            return ExitCode(final, stdout);
        });
        return command;
    }

    /// <summary>
    /// 0 for a sweep that ended with a result: a trial completed or stopped with its metric, as
    /// best.json's best is chosen; 1 for one cancelled or failed, or with no such trial, with the
    /// first reason a trial gave.
    /// </summary>
    public static int ExitCode(SweepSummary final, TextWriter stdout)
    {
        if (final.State != SweepState.Completed) return 1;
        if (final.Trials.Any(t => t.Metric is not null && t.State is TrialState.Completed or TrialState.Stopped)) return 0;
        var why = final.Trials.FirstOrDefault(t => t.Reason is not null)?.Reason;
        stdout.WriteLine($"[sweep] {final.SweepId}: no trial ended with its {final.Metric}, so the sweep has no result" +
                         (why is null ? "" : $"; the first reason: {why}"));
        return 1;
    }

    /// <summary>best.json's state and whether it names a best configuration, once the sweep has ended; null while it runs or without the file.</summary>
    private static (string State, bool HasBest)? EndedInFiles(string dir)
    {
        try
        {
            using var best = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "best.json")));
            var state = best.RootElement.GetProperty("state").GetString();
            return state is null or "running" ? null : (state, best.RootElement.GetProperty("best").ValueKind == System.Text.Json.JsonValueKind.Object);
        }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException) { return null; }
    }

    internal static Option<string?> SweepIdOption(string description)
    {
        var o = new Option<string?>("--sweep-id") { Description = description };
        o.Validators.Add(r => { if (r.GetValueOrDefault<string?>() is { } id && EntityId.SweepIdProblem(id) is { } problem) r.AddError(problem); });
        return o;
    }
}
