using System.CommandLine;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Hosting;

namespace Cluster.Seed.Commands;

/// <summary>
/// `cancel`: stops a run for good, on a cluster (through the seed's API: --server) or embedded
/// (--runs-dir: through the `run` process serving it, or, when none is, in its journal). The
/// cancel is persisted and final.
/// </summary>
internal static class CancelCommand
{
    public static Command Create(TextWriter stdout)
    {
        var runId = CommandLine.RunIdArgument("the run to cancel");
        var sweep = new Option<bool>("--sweep") { Description = "the id is a sweep's: its running trials are cancelled and no new one starts (on a cluster)" };
        var reason = new Option<string>("--reason") { Description = "why (shown by status and events.log)", DefaultValueFactory = _ => "cancelled by the user" };
        var runsDir = new Option<string>("--runs-dir") { Description = "folder of embedded run directories", DefaultValueFactory = _ => "runs" };
        var api = new ApiOptions();
        var command = new Command("cancel", "cancel a run for good: an embedded run in --runs-dir, else one on the cluster (through the seed's API)") { runId, reason, sweep, runsDir };
        api.AddTo(command);
        command.SetAction(async (p, ct) =>
        {
            var id = p.GetValue(runId)!;
            if (p.GetValue(sweep))
            {
                // an embedded sweep stops with Ctrl+C and resumes with its --sweep-id
                using var sweepClient = api.Client(p);
                var s = await sweepClient.CancelSweepAsync(id, p.GetValue(reason)!, ct);
                stdout.WriteLine(s.State == SweepState.Cancelled ? $"sweep {id} cancelled" : $"sweep {id} had already ended: {s.State.ToString().ToLowerInvariant()}");
                return 0;
            }
            CancelAnswer answer;
            var dir = p.GetValue(runsDir)!;
            // --runs-dir typed (its default is implicit): the run must be there, not looked for on a cluster
            if (p.GetResult(runsDir) is { Implicit: false } && !api.Given(p) && !EmbeddedRun.Exists(dir, id))
                throw new Distill.Engine.Specs.InputException($"no embedded run {id} in {dir} (no {Path.Combine(dir, id, "journal.db")}); a run on a cluster is cancelled with --server");
            if (api.Given(p) || !EmbeddedRun.Exists(dir, id))
            {
                using var client = api.Client(p);
                try { answer = await client.CancelRunAsync(id, p.GetValue(reason)!, ct); }
                catch (Cluster.Node.Http.ApiProblemException e) when (e.Status == System.Net.HttpStatusCode.NotFound)
                {
                    if (!await IsSweep(client, id, ct)) throw;
                    throw new Distill.Engine.Specs.InputException($"{e.Message}: {id} is a sweep's id; cancel a sweep with --sweep");
                }
            }
            else
            {
                if (EmbeddedRun.Serving(dir, id) is { } address)
                {
                    await using var client = await EmbeddedRun.Client(address);
                    answer = await RunClient.CancelAsync(client.Coordinator, id, p.GetValue(reason)!, TimeSpan.FromSeconds(30));
                }
                else
                {
                    // nobody serves it: record the cancel in its journal, starting none of its entities (held
                    // meanwhile: a `run` of it starting now would write the same journal)
                    using var held = EmbeddedRun.Hold(Path.Combine(dir, id), $"run {id}", "--runs-dir");
                    await using var embedded = await ClusterNode.StartAsync(EmbeddedRun.Options(dir, id, resumeRuns: false));
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

    private static async Task<bool> IsSweep(Cluster.Node.Http.ApiClient client, string id, CancellationToken ct)
    {
        try { await client.SweepAsync(id, ct); return true; }
        catch (Cluster.Node.Http.ApiProblemException) { return false; }
    }
}
