using System.CommandLine;
using Cluster.Node.Hosting;

namespace Cluster.Seed.Commands;

/// <summary>`status`: runs, progress and pipeline queue depths; sweeps and their trials (through the seed's API).</summary>
internal static class StatusCommand
{
    public static Command Create(TextWriter stdout)
    {
        var runId = CommandLine.RunIdOption("one run only");
        var sweepId = SweepCommand.SweepIdOption("one sweep only (its trials table)");
        var api = new ApiOptions();
        var command = new Command("status", "runs, progress and pipeline queue depths; sweeps and their trials") { runId, sweepId };
        api.AddTo(command);
        command.SetAction(async (p, ct) =>
        {
            using var client = api.Client(p);
            if (p.GetValue(sweepId) is { } sid)
            {
                stdout.Write(SweepClient.Table(await client.SweepAsync(sid, ct)));
                return 0;
            }
            if (p.GetValue(runId) is { } rid)
            {
                stdout.WriteLine(RunClient.Format(await client.RunAsync(rid, ct)));
                return 0;
            }
            foreach (var s in await client.SweepsAsync(ct))
                stdout.WriteLine(SweepClient.Table(s).Split('\n')[0]);
            var runs = await client.RunsAsync(ct);
            if (runs.Length == 0) stdout.WriteLine("no runs");
            foreach (var r in runs) stdout.WriteLine(RunClient.Format(r));
            return 0;
        });
        return command;
    }
}
