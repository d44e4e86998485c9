using System.CommandLine;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;

namespace Cluster.Seed.Commands;

/// <summary>`serve`: a seed node (the run coordinator); GPU nodes join it.</summary>
internal static class ServeCommand
{
    public static Command Create(TextWriter stdout)
    {
        var node = new NodeCommandOptions();
        var command = new Command("serve", "start a seed node (run coordinator); GPU nodes join it");
        node.AddTo(command);
        command.SetAction(async (p, ct) =>
        {
            var options = node.ToNodeOptions(p, [Roles.Seed], 4053);
            if (options.Seeds.Count == 0) options = options with { Seeds = [$"{options.Hostname}:{options.Port}"] };
            await using var n = await ClusterNode.StartAsync(options);
            stdout.WriteLine($"[serve] seed node up at {n.Address}; journal {options.Persistence.Provider}; store {options.StoreDir}");
            await n.WaitForShutdownAsync(ct);
            return 0;
        });
        return command;
    }
}
