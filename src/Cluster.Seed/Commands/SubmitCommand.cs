using System.CommandLine;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Distill.Engine.Sweeps;
using Cluster.Node.Hosting;

namespace Cluster.Seed.Commands;

/// <summary>`submit`: a run to a running cluster.</summary>
internal static class SubmitCommand
{
    public static Command Create(TextWriter stdout)
    {
        var spec = CommandLine.SpecArgument<string>("spec", "the run spec or sweep spec (YAML)");
        var sweepId = SweepCommand.SweepIdOption("a sweep's id (default: the sweep's name, the time and a random suffix)");
        var runId = CommandLine.RunIdOption("the run's id (default: the spec's name, the time and a random suffix)");
        var follow = new Option<bool>("--follow") { Description = "print progress until the run ends" };
        var overrides = new SpecOverrides();
        var node = new NodeCommandOptions();
        var command = new Command("submit", "submit a run or a sweep to a running cluster") { spec, runId, sweepId, follow };
        overrides.AddTo(command);
        node.AddTo(command, seedsRequired: true);
        command.SetAction(async (p, ct) =>
        {
            var file = p.GetValue(spec)!;
            if (File.Exists(file) && SweepParser.IsSweep(await File.ReadAllTextAsync(file, ct)))
            {
                var sweep = SweepParser.Load(file);   // a bad sweep is refused before contacting anyone
                await using var sweepClient = await CommandLine.Client(node, p);
                var accepted = await SweepClient.SubmitAsync(sweepClient.Sweeps, sweep.SourceText, Path.GetFullPath(file), p.GetValue(sweepId), TimeSpan.FromSeconds(30));
                stdout.WriteLine($"submitted sweep {accepted.SweepId}");
                if (!p.GetValue(follow)) return 0;
                var ended = await SweepClient.FollowAsync(sweepClient.Sweeps, accepted.SweepId, stdout, TimeSpan.FromSeconds(2), ct);
                return ended.State == SweepState.Completed ? 0 : 1;
            }
            var (yaml, _) = overrides.Apply(p, file);   // a bad spec is refused before contacting anyone
            await using var client = await CommandLine.Client(node, p);
            var id = await RunClient.SubmitAsync(client.Coordinator, yaml, file, p.GetValue(runId), TimeSpan.FromSeconds(30));
            stdout.WriteLine($"submitted {id}");
            if (!p.GetValue(follow)) return 0;
            var final = await RunClient.FollowAsync(client.Coordinator, id, stdout, TimeSpan.FromSeconds(2), ct);
            return final.State == RunState.Completed ? 0 : 1;
        });
        return command;
    }
}
