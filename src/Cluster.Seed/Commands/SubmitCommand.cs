using System.CommandLine;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using Distill.Engine.Sweeps;

namespace Cluster.Seed.Commands;

/// <summary>`submit`: a run or a sweep to a running cluster, through the seed's API.</summary>
internal static class SubmitCommand
{
    public static Command Create(TextWriter stdout)
    {
        var spec = CommandLine.SpecArgument<string>("spec", "the run spec or sweep spec (YAML)");
        var sweepId = SweepCommand.SweepIdOption("a sweep's id (default: the sweep's name, the time and a random suffix)");
        var runId = CommandLine.RunIdOption("the run's id (default: the spec's name, the time and a random suffix)");
        var follow = new Option<bool>("--follow") { Description = "print progress until the run ends" };
        var overrides = new SpecOverrides();
        var api = new ApiOptions();
        var command = new Command("submit", "submit a run or a sweep to a running cluster (through the seed's API)") { spec, runId, sweepId, follow };
        overrides.AddTo(command);
        api.AddTo(command);
        command.SetAction(async (p, ct) =>
        {
            var file = p.GetValue(spec)!;
            // where the spec came from, as the run's events and status name it
            var where = Path.GetFullPath(file);
            if (File.Exists(file) && SweepParser.IsSweep(await File.ReadAllTextAsync(file, ct)))
            {
                var sweep = SweepParser.Load(file);   // a bad sweep is refused before contacting anyone
                RelativePathNotes(sweep.Base, stdout);
                using var sweepClient = api.Client(p);
                var accepted = await sweepClient.SubmitSweepAsync(sweep.SourceText, where, p.GetValue(sweepId), ct);
                stdout.WriteLine(accepted.AlreadyKnown
                    ? $"sweep {accepted.Id} is known already, with this spec: {(await sweepClient.SweepAsync(accepted.Id, ct)).State.ToString().ToLowerInvariant()}; nothing new was submitted"
                    : $"submitted sweep {accepted.Id}");
                if (!p.GetValue(follow)) return 0;
                var ended = await sweepClient.FollowSweepAsync(accepted.Id, stdout, TimeSpan.FromSeconds(2), ct);
                return SweepCommand.ExitCode(ended, stdout);
            }
            var (yaml, runSpec) = overrides.Apply(p, file);   // a bad spec is refused before contacting anyone
            RelativePathNotes(runSpec, stdout);
            using var client = api.Client(p);
            var submitted = await client.SubmitRunAsync(yaml, where, p.GetValue(runId), ct);
            var id = submitted.Id;
            // the same id with the same spec is the run already there, not a new one
            stdout.WriteLine(submitted.AlreadyKnown
                ? $"{id} is known already, with this spec: {(await client.RunAsync(id, ct)).State.ToString().ToLowerInvariant()}; nothing new was submitted"
                : $"submitted {id}");
            // (a spec submitted as before has the baseline's run only if it was submitted with one)
            var withBaseline = runSpec.CompareBaseline && (!submitted.AlreadyKnown || (await client.RunsAsync(ct)).Any(r => r.RunId == RunIds.Baseline(id)));
            if (withBaseline) stdout.WriteLine($"compare_baseline: the student alone is trained by the run {RunIds.Baseline(id)}; its figures go into {id}'s result.json");
            if (!p.GetValue(follow)) return 0;
            var final = await client.FollowRunAsync(id, stdout, TimeSpan.FromSeconds(2), ct);
            if (final.State != RunState.Completed) return 1;
            return !withBaseline || (await client.FollowRunAsync(RunIds.Baseline(id), stdout, TimeSpan.FromSeconds(2), ct)).State == RunState.Completed ? 0 : 1;
        });
        return command;
    }

    /// <summary>The cluster's processes read a spec's files themselves, from their own working directories: a relative path is said.</summary>
    private static void RelativePathNotes(RunSpec spec, TextWriter stdout)
    {
        foreach (var (key, path, _) in ValidateCommand.Paths(spec).Where(x => !Path.IsPathRooted(x.Path)))
            stdout.WriteLine($"note: {key} '{path}' is relative: the seed's and GPU nodes' processes read it from their own working directories; give an absolute path on a volume they all mount");
    }
}
