using System.CommandLine;
using Cluster.Contracts.Runs;
using Cluster.Node.Hosting;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using Distill.Engine.Training;

namespace Cluster.Seed.Commands;

/// <summary>`run`: a spec embedded in this process, through the actors of a one-node cluster, or the engine's loop.</summary>
internal static class RunCommand
{
    public static Command Create(TextWriter stdout)
    {
        var spec = CommandLine.SpecArgument<string>("spec", "the run spec (YAML)");
        var runsDir = new Option<string>("--runs-dir") { Description = "folder of run directories", DefaultValueFactory = _ => "runs" };
        var runId = CommandLine.RunIdOption("the run's id; the same id resumes an interrupted run (through the actors: --engine starts afresh and refuses an id in use)");
        var engine = new Option<bool>("--engine") { Description = "run the engine's loop directly instead of the actors" };
        var overrides = new SpecOverrides();
        var command = new Command("run", "run a spec embedded in this process (writes runs/<run-id>/): through the actors of a one-node " +
                                         "cluster (SQLite journal in the run directory; the same --run-id resumes it), or with --engine " +
                                         "the engine's loop alone")
            { spec, runsDir, runId, engine };
        overrides.AddTo(command);
        command.SetAction(async (p, ct) =>
        {
            var file = p.GetValue(spec)!;
            var (yaml, s) = overrides.Apply(p, file);
            // what this machine lacks is refused before a run is made of it (a failed run's id is spent)
            ValidateCommand.RequireFiles(file, s);
            try { Devices.Resolve(s.Device); }
            catch (InvalidOperationException e) { throw new InputException(e.Message); }
            if (p.GetValue(engine))
            {
                // a named run's directory is this process's while it runs (an embedded run of it may be going)
                var id = p.GetValue(runId);
                EmbeddedRun.Folder(p.GetValue(runsDir)!, "--runs-dir");
                var named = id is null ? null : Path.Combine(p.GetValue(runsDir)!, id);
                // the engine loop starts a run afresh: a directory that holds one already (finished, interrupted, or an actor run's) is not written over
                var contents = named is not null && Directory.Exists(named) ? Directory.GetFileSystemEntries(named).Select(Path.GetFileName).Order().ToList() : [];
                if (contents.Count > 0)
                    throw new InputException($"run {id} exists in {Path.GetFullPath(named!)} ({string.Join(", ", contents.Take(4))}{(contents.Count > 4 ? ", ..." : "")}); " +
                                             "the engine loop does not resume a run and would write over it: give another --run-id or none");
                using var dirLock = named is null ? null : EmbeddedRun.Hold(EmbeddedRun.Folder(named, "--runs-dir"), $"run {id}", "--run-id");
                try { new Runner(new RunnerOptions { RunsRoot = p.GetValue(runsDir)!, RunId = p.GetValue(runId), Cancellation = ct }, stdout).Run(s); }
                catch (OperationCanceledException) when (ct.IsCancellationRequested)
                {
                    stdout.WriteLine("[run] interrupted (the engine loop does not resume: run it again under another --run-id or none, or through the actors, which do)");
                    return 130;
                }
                return 0;
            }
            return await RunEmbedded(yaml, s, file, p.GetValue(runsDir)!, p.GetValue(runId), stdout, ct);
        });
        return command;
    }

    /// <summary>The state status.json gave the run when its last command ended, if failed or cancelled; null otherwise.</summary>
    private static string? EndedState(string dir)
    {
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "status.json")));
            return doc.RootElement.TryGetProperty("state", out var s) && s.GetString() is "failed" or "cancelled" ? s.GetString() : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException or InvalidOperationException) { return null; }
    }

    /// <summary>A one-node cluster in this process: SQLite journal and blobs in the run directory.</summary>
    private static async Task<int> RunEmbedded(string yaml, RunSpec spec, string file, string runsDir, string? runId, TextWriter stdout, CancellationToken ct)
    {
        runId ??= RunIds.New(spec.Name);
        EmbeddedRun.Folder(runsDir, "--runs-dir");
        var dir = EmbeddedRun.Folder(Path.Combine(runsDir, runId), "--runs-dir");
        using var held = EmbeddedRun.Hold(dir, $"run {runId}", "--run-id");
        await EmbeddedRun.KeepSpec(dir, yaml, $"run {runId}", "the spec and options it was started with", "--run-id", ct);
        var options = EmbeddedRun.Options(runsDir, runId);
        stdout.WriteLine($"[run] {runId}: {spec.Method.Name} through the actor pipeline (embedded one-node cluster, journal {options.Persistence.ConnectionString.Split(';')[0]})");
        if (spec.CompareBaseline) stdout.WriteLine($"[run] compare_baseline: the student alone is trained by the run {RunIds.Baseline(runId)}; its figures go into this run's result.json");
        // what the earlier command left (the coordinator, once up, may end the run during this one: a journal found damaged)
        var endedBefore = EndedState(dir);
        await using var node = await ClusterNode.StartAsync(options);
        var wall = System.Diagnostics.Stopwatch.StartNew();
        RunSummary final;
        RunSummary? baseline = null;
        EmbeddedRun.Announce(runsDir, runId, node.Address.Host!, node.Address.Port!.Value);
        try
        {
            // a run that failed or was cancelled stays so: say it of the earlier command, not as news of this one
            if ((await RunClient.StatusAsync(node.Coordinator, runId, TimeSpan.FromSeconds(20), ct)).FirstOrDefault() is { State: RunState.Failed or RunState.Cancelled } ended)
            {
                var why = ended.Message is { } m && m.StartsWith(ended.State.Name() + ": ", StringComparison.Ordinal) ? m[(ended.State.Name().Length + 2)..] : ended.Message;
                stdout.WriteLine(endedBefore == ended.State.Name()
                    ? $"[result] run {runId} had already ended before this command, {ended.State.Name()}: {why}"
                    : $"[result] run {runId} {ended.State.Name()} as it resumed: {why}");
                stdout.WriteLine($"[run] an ended run is final (its journal says so): to run the spec again, fixed, give another --run-id or none");
                return 1;
            }
            // named by the user's file in events.log and the log (its text, overrides applied, is submitted.yaml's)
            await RunClient.SubmitAsync(node.Coordinator, yaml, Path.GetFullPath(file), runId, TimeSpan.FromSeconds(60));
            final = await Terminal.RunProgress.FollowRunAsync(node.Coordinator, runId, dir, stdout, ct);
            // (a run journaled before compare_baseline ran on the actors has no baseline's run)
            var baselineId = RunIds.Baseline(runId);
            if (spec.CompareBaseline && final.State == RunState.Completed && (await RunClient.StatusAsync(node.Coordinator, baselineId, TimeSpan.FromSeconds(20), ct)).Length > 0)
                baseline = await Terminal.RunProgress.FollowRunAsync(node.Coordinator, baselineId, Path.Combine(runsDir, baselineId), stdout, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // Ctrl+C also starts the actor system's shutdown (Akka's CLR hook), so the run's files, not its
            // coordinator, say whether it had ended: an interrupt that comes as it ends leaves its result
            var baselineDone = spec.CompareBaseline ? Result(Path.Combine(runsDir, RunIds.Baseline(runId))) : null;
            if (Result(dir) is not { } done || spec.CompareBaseline && baselineDone is null)
            {
                stdout.WriteLine($"[run] {runId} interrupted; its state is saved in {dir}: resume it with --run-id {runId}");
                return 130;
            }
            stdout.WriteLine(CompletedLine(done, done.TeacherAccuracy, spec.CompareBaseline ? done.BaselineAccuracy ?? baselineDone?.StudentAccuracy : null, null, wall.Elapsed, dir));
            return 0;
        }
        finally { EmbeddedRun.Withdraw(runsDir, runId); }
        var result = Result(dir);
        stdout.WriteLine(final.State == RunState.Completed
            ? CompletedLine(result, final.TeacherAccuracy, baseline?.State == RunState.Completed ? result?.BaselineAccuracy : null,
                            baseline is null || baseline.State == RunState.Completed ? null : $"{baseline.State.Name()}: {baseline.Message}", wall.Elapsed, dir, final.StudentAccuracy)
            : final.State == RunState.Cancelled ? $"[result] run {runId} {final.Message}"
            : $"[result] run {runId} failed: {final.Message}");
        return final.State == RunState.Completed && (baseline is null || baseline.State == RunState.Completed) ? 0 : 1;
    }

    /// <summary>A completed run's result line: the test set's accuracies, the wall time and where result.json is.</summary>
    private static string CompletedLine(RunResult? result, double? teacher, double? baseline, string? baselineEnded, TimeSpan wall, string dir, double? student = null) =>
        $"[result] student {result?.StudentAccuracy ?? student:F2}% test{(teacher is { } t ? $", teacher {t:F2}%" : "")}" +
        (baselineEnded is not null ? $", student alone {baselineEnded}" : baseline is { } b ? $", student alone {b:F2}%" : "") +
        $", {Wall(result, wall)} -> {Path.Combine(dir, "result.json")}";

    /// <summary>result.json's wall time (from submission to the end); this command's own where a resume makes them differ.</summary>
    private static string Wall(RunResult? result, TimeSpan command) =>
        result is null ? $"{command.TotalSeconds:F0} s"
        : $"{result.WallSeconds:F0} s" + (result.WallSeconds - command.TotalSeconds > 5 ? $" since it was submitted ({command.TotalSeconds:F0} s in this command)" : "");

    /// <summary>result.json, for the test set's accuracy (the run's summary holds the evaluation split's, a validation split where the spec holds one out).</summary>
    private static RunResult? Result(string dir)
    {
        try { return RunDirectory.ReadResult(dir); }
        catch (Exception e) when (e is IOException or InvalidDataException) { return null; }
    }
}
