using System.CommandLine;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Cluster.Node.Http;
using Distill.Engine.Benchmarks;
using Distill.Engine.Native;
using TorchSharp;

// The GPU node: joins a cluster with role `gpu` and hosts generator, teacher and student entities
// (shard regions); also reports the devices and runs the engine benchmark on this machine.
NativeBootstrap.EnsureTorchLoadable();
TorchRuntime.Initialize();

var root = new RootCommand("ClusterDistill GPU node");

var node = new NodeCommandOptions();
var hosts = new Option<string[]>("--hosts")
{
    Description = "entity kinds this node hosts: generator, teacher and/or student (default all)",
    CustomParser = r => r.Tokens.SelectMany(t => t.Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray(),
};
hosts.Validators.Add(r =>
{
    var unknown = (r.GetValueOrDefault<string[]>() ?? []).Except(["generator", "teacher", "student"]).ToList();
    if (unknown.Count > 0) r.AddError($"--hosts {string.Join(",", unknown)}: generator, teacher and/or student");
});
var pools = new Option<string[]>("--pool")
{
    Description = "node pools this node is in (a spec's cluster.layout places entities by pool)",
    CustomParser = r => r.Tokens.SelectMany(t => t.Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray(),
};
pools.Validators.Add(r =>
{
    if ((r.GetValueOrDefault<string[]>() ?? []).FirstOrDefault(p => !Distill.Engine.Specs.LayoutSpec.IsValidPool(p)) is { } bad)
        r.AddError($"--pool {bad}: a pool name is letters, digits, '-', '_' and '.'");
});
var slots = new Option<int?>("--slots")
{
    Description = "runs this node takes at once (a sweep's trials and runs submitted alone wait in the seed's queue for a slot); default: one per CUDA device, one on a CPU-only node",
};
NodeCommandOptions.RequireIntIn(slots, 1, 1024);
var join = new Command("join", "join the cluster as a gpu node hosting the given entity kinds; the store must be the one the other nodes use; " +
                               "batches and gradients to other nodes go over the data plane at --data-port") { hosts, pools, slots };
node.AddTo(join, seedsRequired: true, dataPort: true, http: true);
join.SetAction(async (p, ct) =>
{
    var slotCount = p.GetValue(slots) ?? Math.Max(1, torch.cuda.is_available() ? torch.cuda.device_count() : 1);
    var options = node.ToNodeOptions(p, [Roles.Gpu, Roles.SlotsPrefix + slotCount, .. p.GetValue(hosts) ?? [],
        .. (p.GetValue(pools) ?? []).Select(x => LayoutAllocationStrategy.PoolRolePrefix + x)], 0);
    // health and metrics (off unless --http-port: several nodes may share a host)
    ClusterNode? current = null;
    await using var http = node.HttpPortOf(p, null) is { } httpPort
        ? await NodeHttpServer.StartAsync(options.Hostname, httpPort, () => ClusterNode.NotReady(current))
        : null;
    if (http is not null) Console.WriteLine(NodeLogger.Line(options.LogFormat, "gpu-node", $"health and metrics at {http.Address}"));
    // a node whose seeds formed a new cluster (they restarted), or that was downed, joins again:
    // its entities are persistent and remembered, so they resume from their own state
    for (var attempt = 0; ; attempt++)
    {
        ClusterNode n;
        current = null;
        try { n = await ClusterNode.StartAsync(options); }
        catch (TimeoutException e) when (attempt > 0 && !ct.IsCancellationRequested)
        {
            Console.WriteLine(NodeLogger.Line(options.LogFormat, "gpu-node", $"{e.Message}; trying again"));
            continue;
        }
        ClusterNode.Ending ending;
        current = n;
        await using (n)
        {
            Console.WriteLine(NodeLogger.Line(options.LogFormat, "gpu-node", $"up at {n.Address} (pid {Environment.ProcessId}); {slotCount} slot(s); journal {options.Persistence.Provider}; store {options.StoreDir}"));
            ending = await n.WaitForShutdownAsync(ct);
        }
        if (ending == ClusterNode.Ending.Requested || ct.IsCancellationRequested) return 0;
        Console.WriteLine(NodeLogger.Line(options.LogFormat, "gpu-node", ending == ClusterNode.Ending.SeedsLost
            ? "the seeds formed a new cluster: joining it"
            : "this node was removed from the cluster: joining again"));
    }
});
root.Add(join);

var devices = new Command("devices", "what this machine offers");
devices.SetAction(_ =>
{
    Console.WriteLine($"cuda available: {torch.cuda.is_available()}, devices: {(torch.cuda.is_available() ? torch.cuda.device_count() : 0)}");
    Console.WriteLine($"cpu threads: {torch.get_num_threads()}, conv path: {(TorchRuntime.UseSafeConvolution ? "exact (channel-padded)" : "native")}");
    return 0;
});
root.Add(devices);

var device = new Option<string>("--device") { Description = "cpu, cuda or auto", DefaultValueFactory = _ => "auto" };
device.AcceptOnlyFromAmong("cpu", "cuda", "auto");
var quick = new Option<bool>("--quick") { Description = "fewer repetitions" };
var bench = new Command("bench", "the engine benchmark on this machine") { device, quick };
bench.SetAction(p =>
{
    var table = Benchmarks.Run(p.GetValue(device)!, quick: p.GetValue(quick), Console.Out);
    var output = Path.Combine("results", $"bench-gpunode-{table.Device}.json");
    table.Save(output);
    Console.WriteLine($"saved {output}");
    return 0;
});
root.Add(bench);

try
{
    return CommandRunner.Invoke("Cluster.GpuNode", root, args, Console.Out, Console.Error);
}
catch (Distill.Engine.Specs.InputException e)
{
    Console.Error.WriteLine(NodeLogger.Fatal(args, "gpu-node", e.Message));
    return 2;
}
catch (Exception e) when (e is PersistenceUnavailableException or TimeoutException or ArgumentException or InvalidOperationException or InvalidDataException or FileNotFoundException)
{
    Console.Error.WriteLine(NodeLogger.Fatal(args, "gpu-node", e.Message));
    return 1;
}
