using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Distill.Engine.Benchmarks;
using Distill.Engine.Native;
using TorchSharp;

// The GPU node: joins a cluster with role `gpu` and hosts generator, teacher and student entities
// (shard regions); also reports the devices and runs the engine benchmark on this machine.
NativeBootstrap.EnsureTorchLoadable();
TorchRuntime.Initialize();
const string usage = """
    usage: Cluster.GpuNode <command>
      join --seeds H:P[,...] [--host H] [--port P] [--db sqlite:FILE|postgres:CONN] [--store DIR] [--runs-dir DIR]
           [--hosts generator,teacher,student] [--pool NAME[,NAME...]] [--data-port P|off]
                             join the cluster as a gpu node hosting the given entity kinds (default all),
                             in the given node pools (a spec's cluster.layout places entities by pool);
                             the store must be the one the other nodes use; batches and gradients to
                             other nodes go over the data plane at --data-port (default: any free port)
      devices                what this machine offers
      bench [--device cpu|cuda|auto] [--quick]
    """;
try
{
    var o = Options.Parse(args.Skip(1).ToArray());
    switch (args.FirstOrDefault())
    {
        case "join":
            if (o.Get("seeds") is null) throw new UsageException("join needs --seeds host:port");
            var hosts = o.Get("hosts")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [];
            var unknown = hosts.Except(["generator", "teacher", "student"]).ToList();
            if (unknown.Count > 0) throw new UsageException($"--hosts {string.Join(",", unknown)}: generator, teacher and/or student");
            var pools = o.Get("pool")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [];
            if (pools.FirstOrDefault(p => !Distill.Engine.Specs.LayoutSpec.IsValidPool(p)) is { } bad)
                throw new UsageException($"--pool {bad}: a pool name is letters, digits, '-', '_' and '.'");
            var options = o.ToNodeOptions([Roles.Gpu, .. hosts, .. pools.Select(p => LayoutAllocationStrategy.PoolRolePrefix + p)], 0);
            await using (var node = await ClusterNode.StartAsync(options))
            {
                Console.WriteLine($"[gpu-node] up at {node.Address} (pid {Environment.ProcessId}); journal {options.Persistence.Provider}; store {options.StoreDir}");
                await node.WaitForShutdownAsync();
            }
            return 0;
        case "devices":
            Console.WriteLine($"cuda available: {torch.cuda.is_available()}, devices: {(torch.cuda.is_available() ? torch.cuda.device_count() : 0)}");
            Console.WriteLine($"cpu threads: {torch.get_num_threads()}, conv path: {(TorchRuntime.UseSafeConvolution ? "exact (channel-padded)" : "native")}");
            return 0;
        case "bench":
            var table = Benchmarks.Run(o.Get("device") ?? "auto", quick: o.Flag("quick"), Console.Out);
            var output = Path.Combine("results", $"bench-gpunode-{table.Device}.json");
            table.Save(output);
            Console.WriteLine($"saved {output}");
            return 0;
        default:
            Console.Error.WriteLine(usage);
            return 2;
    }
}
catch (UsageException e)
{
    Console.Error.WriteLine($"error: {e.Message}\n{usage}");
    return 2;
}
catch (Exception e) when (e is PersistenceUnavailableException or TimeoutException or ArgumentException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
