using System.CommandLine;
using Cluster.Node.Hosting;

namespace Cluster.Seed.Commands;

/// <summary>`status`: runs, progress and pipeline queue depths.</summary>
internal static class StatusCommand
{
    public static Command Create(TextWriter stdout)
    {
        var runId = CommandLine.RunIdOption("one run only");
        var node = new NodeCommandOptions();
        var command = new Command("status", "runs, progress and pipeline queue depths") { runId };
        node.AddTo(command, seedsRequired: true);
        command.SetAction(async (p, ct) =>
        {
            await using var client = await CommandLine.Client(node, p);
            var runs = await RunClient.StatusAsync(client.Coordinator, p.GetValue(runId), TimeSpan.FromSeconds(30));
            if (runs.Length == 0) stdout.WriteLine("no runs");
            foreach (var r in runs) stdout.WriteLine(RunClient.Format(r));
            return 0;
        });
        return command;
    }
}
