using System.CommandLine;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Cluster.Node.Http;

namespace Cluster.Seed.Commands;

/// <summary>`serve`: a seed node (the run coordinator); GPU nodes join it. It serves the API, the dashboard, health and metrics over HTTP.</summary>
internal static class ServeCommand
{
    public const int DefaultHttpPort = 8080;

    public static Command Create(TextWriter stdout)
    {
        var node = new NodeCommandOptions();
        var tokenFile = ApiOptions.TokenFileOption("the API's bearer token (default: $CLUSTERDISTILL_TOKEN, else this file, created with a random token when missing)");
        var command = new Command("serve", "start a seed node (run coordinator); GPU nodes join it. Serves the API and dashboard at --http-port (default 8080)") { tokenFile };
        node.AddTo(command, http: true);
        command.SetAction(async (p, ct) =>
        {
            var options = node.ToNodeOptions(p, [Roles.Seed], 4053);
            if (options.Seeds.Count == 0 && options.Discovery is null) options = options with { Seeds = [$"{options.Hostname}:{options.Port}"] };
            // an unreachable journal is refused before anything is created or bound
            await PersistenceCheck.EnsureReachableAsync(options.Persistence);
            ClusterNode? current = null;
            NodeHttpServer? http = null;
            if (node.HttpPortOf(p, DefaultHttpPort) is { } httpPort)
            {
                var token = ApiToken.ForServer(p.GetValue(tokenFile));
                http = await NodeHttpServer.StartAsync(options.Hostname, httpPort, () => ClusterNode.NotReady(current),
                    web => ControlApi.Map(web, token, () => current, options));
                stdout.WriteLine(NodeLogger.Line(options.LogFormat, "serve", $"API and dashboard at {http.Address}; token from {token.Source}"));
            }
            try
            {
                await using var n = await ClusterNode.StartAsync(options);
                current = n;
                stdout.WriteLine(NodeLogger.Line(options.LogFormat, "serve", $"seed node up at {n.Address}; journal {options.Persistence.Provider}; store {options.StoreDir}"));
                await n.WaitForShutdownAsync(ct);
            }
            finally
            {
                if (http is not null) await http.DisposeAsync();
            }
            return 0;
        });
        return command;
    }
}
