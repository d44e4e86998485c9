using System.CommandLine;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Hosting;

namespace Cluster.Seed.Commands;

/// <summary>
/// `cancel`: stops a run for good, on a cluster (--seeds) or embedded (--runs-dir: through the
/// `run` process serving it, or, when none is, in its journal). The cancel is persisted and final.
/// </summary>
internal static class CancelCommand
{
    public static Command Create(TextWriter stdout)
    {
        var runId = CommandLine.RunIdArgument("the run to cancel");
        var sweep = new Option<bool>("--sweep") { Description = "the id is a sweep's: its running trials are cancelled and no new one starts (on a cluster, --seeds)" };
        var reason = new Option<string>("--reason") { Description = "why (shown by status and events.log)", DefaultValueFactory = _ => "cancelled by the user" };
        var node = new NodeCommandOptions();
        var command = new Command("cancel", "cancel a run for good: on a cluster with --seeds, or an embedded run in --runs-dir") { runId, reason, sweep };
        node.AddTo(command);
        command.SetAction(async (p, ct) =>
        {
            var id = p.GetValue(runId)!;
            if (p.GetValue(sweep))
            {
                if (p.GetValue(node.Seeds) is not { Length: > 0 })
                    throw new InvalidOperationException("cancel --sweep needs --seeds (an embedded sweep stops with Ctrl+C and resumes with its --sweep-id)");
                await using var sweepClient = await CommandLine.Client(node, p);
                var s = await SweepClient.CancelAsync(sweepClient.Sweeps, id, p.GetValue(reason)!, TimeSpan.FromSeconds(30));
                stdout.WriteLine(s.State == SweepState.Cancelled ? $"sweep {id} cancelled" : $"sweep {id} had already ended: {s.State.ToString().ToLowerInvariant()}");
                return 0;
            }
            CancelAnswer answer;
            if (p.GetValue(node.Seeds) is { Length: > 0 })
            {
                await using var client = await CommandLine.Client(node, p);
                answer = await RunClient.CancelAsync(client.Coordinator, id, p.GetValue(reason)!, TimeSpan.FromSeconds(30));
            }
            else
            {
                var runsDir = p.GetValue(node.RunsDir)!;
                if (!EmbeddedRun.Exists(runsDir, id)) throw new InvalidOperationException($"no embedded run '{id}' in {runsDir} (a run on a cluster needs --seeds)");
                if (EmbeddedRun.Serving(runsDir, id) is { } address)
                {
                    await using var client = await CommandLine.Client(node, p, [address]);
                    answer = await RunClient.CancelAsync(client.Coordinator, id, p.GetValue(reason)!, TimeSpan.FromSeconds(30));
                }
                else
                {
                    // nobody serves it: record the cancel in its journal, starting none of its entities
                    await using var embedded = await ClusterNode.StartAsync(EmbeddedRun.Options(runsDir, id, resumeRuns: false));
                    answer = await RunClient.CancelAsync(embedded.Coordinator, id, p.GetValue(reason)!, TimeSpan.FromSeconds(30));
                }
            }
            stdout.WriteLine(answer.AlreadyEnded
                ? $"run {id} had already ended: {answer.State.ToString().ToLowerInvariant()}"
                : $"run {id} cancelled");
            return 0;
        });
        return command;
    }
}
