using System.CommandLine;

namespace Cluster.Seed.Commands;

/// <summary>`bench`: the engine's workloads, or (--cluster) the actor pipeline against the engine loop; prints and saves a table.</summary>
internal static class BenchCommand
{
    public static Command Create(TextWriter stdout)
    {
        var device = new Option<string>("--device") { Description = "cpu, cuda or auto", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda", "auto");
        var output = new Option<string?>("--out") { Description = "where to save the table (JSON, and Markdown beside it)" };
        var quick = new Option<bool>("--quick") { Description = "fewer repetitions" };
        var cluster = new Option<bool>("--cluster") { Description = "the actor pipeline vs the engine loop, Akka.Remote vs raw TCP between two processes, all-reduce vs the ring bound" };
        var part = new Option<string[]>("--part")
        {
            Description = "with --cluster: only these parts (pipeline, wire, allreduce, sweeps: the sweep coordinator with 10,000 simulated trials); pipeline, wire and allreduce by default",
            AllowMultipleArgumentsPerToken = true,
        };
        part.AcceptOnlyFromAmong("pipeline", "wire", "allreduce", "sweeps");
        var http = new Option<int?>("--http-port") { Description = "with --cluster: the pipeline's node also serves the API, dashboard and /metrics at this port (scripts/bench-observed.sh watches and scrapes it)" };
        var tls = new Option<string?>("--tls") { Description = "with --cluster: a folder with tls.crt, tls.key and ca.crt (scripts/make-test-ca.sh): the wire and all-reduce between the two processes over mutually authenticated TLS" };
        var command = new Command("bench", "time the engine's workloads; prints and saves a table") { device, output, quick, cluster, part, http, tls };
        command.Validators.Add(r =>
        {
            if (r.GetValue(part) is { Length: > 0 } && !r.GetValue(cluster)) r.AddError("--part applies to bench --cluster only");
            if (r.GetValue(http) is not null && !r.GetValue(cluster)) r.AddError("--http-port applies to bench --cluster only");
            if (r.GetValue(tls) is not null && !r.GetValue(cluster)) r.AddError("--tls applies to bench --cluster only");
        });
        command.SetAction(p =>
        {
            if (p.GetValue(cluster))
            {
                var parts = p.GetValue(part) is { Length: > 0 } only ? only.ToHashSet() : ["pipeline", "wire", "allreduce"];
                var tlsFolder = p.GetValue(tls) is { } t ? Path.GetFullPath(t) : null;
                var rows = Benchmarks.ClusterBench.Run(stdout, p.GetValue(quick), parts, p.GetValue(http), tlsFolder);
                var path = p.GetValue(output) ?? Path.Combine("results", "bench-cluster.json");
                Benchmarks.ClusterBench.Save(rows, path, stdout);
                stdout.WriteLine($"saved {path} and {Path.ChangeExtension(path, ".md")}");
                return 0;
            }
            var table = Distill.Engine.Benchmarks.Benchmarks.Run(p.GetValue(device)!, p.GetValue(quick), stdout);
            var saved = p.GetValue(output) ?? Path.Combine("results", $"bench-{table.Device}.json");
            table.Save(saved);
            stdout.WriteLine($"saved {saved} and {Path.ChangeExtension(saved, ".md")}");
            return 0;
        });
        return command;
    }

    /// <summary>The bench's second process (started by `bench --cluster`).</summary>
    public static Command CreatePeer(TextWriter stdout)
    {
        var port = new Option<int>("--port") { Required = true };
        var tcpPort = new Option<int>("--tcp-port") { Required = true };
        var tls = new Option<string?>("--tls");
        var command = new Command("bench-peer", "the second process of bench --cluster") { port, tcpPort, tls };
        command.Hidden = true;
        command.SetAction(p => Benchmarks.ClusterBench.RunPeer(p.GetValue(port), p.GetValue(tcpPort), p.GetValue(tls), stdout));
        return command;
    }
}
