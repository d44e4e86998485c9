using System.CommandLine;
using Cluster.Node.Hosting;

namespace Cluster.Seed.Commands;

/// <summary>`status`: runs, progress and pipeline queue depths.</summary>
internal static class StatusCommand
{
    public static Command Create(TextWriter stdout)
    {
        var runId = CommandLine.RunIdOption("one run only");
        var sweepId = SweepCommand.SweepIdOption("one sweep only (its trials table)");
        var node = new NodeCommandOptions();
        var command = new Command("status", "runs, progress and pipeline queue depths; sweeps and their trials") { runId, sweepId };
        node.AddTo(command, seedsRequired: true);
        command.SetAction(async (p, ct) =>
        {
            await using var client = await CommandLine.Client(node, p);
            if (p.GetValue(sweepId) is { } sid)
            {
                var one = await SweepClient.StatusAsync(client.Sweeps, sid, TimeSpan.FromSeconds(30));
                if (one.Length == 0) throw new InvalidOperationException($"no sweep {sid}");
                stdout.Write(SweepClient.Table(one[0]));
                return 0;
            }
            foreach (var s in await SweepClient.StatusAsync(client.Sweeps, null, TimeSpan.FromSeconds(30)))
                stdout.WriteLine(SweepClient.Table(s).Split('\n')[0]);
            var runs = await RunClient.StatusAsync(client.Coordinator, p.GetValue(runId), TimeSpan.FromSeconds(30));
            if (runs.Length == 0) stdout.WriteLine("no runs");
            foreach (var r in runs) stdout.WriteLine(RunClient.Format(r));
            return 0;
        });
        return command;
    }
}
