using Cluster.Contracts.Runs;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Distill.Engine.Runs;
using Distill.Engine.Specs;

namespace Cluster.Seed.Commands;

/// <summary>The control plane's commands. Exit codes: 0 ok, 1 run failed, 2 bad input.</summary>
public static class CommandLine
{
    public const string Usage = """
        usage: Cluster.Seed <command> [options]
          run <spec.yaml> [--runs-dir DIR] [--run-id ID] [--device cpu|cuda|auto] [--seed N] [--engine]
                                   run a spec embedded in this process (writes runs/<run-id>/). DAFL,
                                   DeepInversion and ADI go through the actors (a one-node cluster,
                                   SQLite journal in the run directory; the same --run-id resumes it);
                                   --engine, and every other method, runs the engine's loop directly
          serve [--host H] [--port P] [--seeds H:P,...] [--db sqlite:FILE|postgres:CONN] [--store DIR] [--runs-dir DIR]
                                   start a seed node (run coordinator); GPU nodes join it
          submit <spec.yaml> --seeds H:P[,...] [--run-id ID] [--follow]
                                   submit a run to a running cluster
          status --seeds H:P[,...] [--run-id ID]
                                   runs, progress and pipeline queue depths
          validate <spec.yaml>...  check specs without running them
          bench [--device cpu|cuda|auto] [--out FILE] [--quick] [--cluster]
                                   time the engine's workloads; prints and saves a table. --cluster:
                                   the actor pipeline vs the engine loop, Akka.Remote vs raw TCP
                                   between two processes, all-reduce vs the ring bound
        """;

    public static int Dispatch(string[] args, TextWriter stdout, TextWriter stderr)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            stdout.WriteLine(Usage);
            return args.Length == 0 ? 2 : 0;
        }
        try
        {
            var opts = Options.Parse(args[1..]);
            return args[0] switch
            {
                "run" => Run(opts, stdout),
                "serve" => Serve(opts, stdout).GetAwaiter().GetResult(),
                "submit" => Submit(opts, stdout).GetAwaiter().GetResult(),
                "status" => Status(opts, stdout).GetAwaiter().GetResult(),
                "validate" => Validate(opts, stdout),
                "bench" => Bench(opts, stdout),
                "bench-peer" => Benchmarks.ClusterBench.RunPeer(int.Parse(opts.Get("port")!), int.Parse(opts.Get("tcp-port")!), stdout),
                _ => throw new UsageException($"unknown command '{args[0]}'"),
            };
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"error: {e.Message}\n{Usage}");
            return 2;
        }
        catch (SpecException e)
        {
            stderr.WriteLine($"spec refused: {e.Message}");
            return 2;
        }
        catch (Exception e) when (e is FileNotFoundException or InvalidDataException or ArgumentException or InvalidOperationException
                                       or PersistenceUnavailableException or TimeoutException or Akka.Actor.AskTimeoutException)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    private static int Run(Options o, TextWriter stdout)
    {
        if (o.Positional.Count != 1) throw new UsageException("run takes exactly one spec file");
        var file = o.Positional[0];
        var spec = SpecParser.Load(file);
        var yaml = File.ReadAllText(file);
        if (o.Get("device") is { } device)
        {
            if (device is not ("cpu" or "cuda" or "auto")) throw new UsageException($"--device {device}: cpu, cuda or auto");
            spec = spec with { Device = device };
            yaml += $"\n# --device {device}\ndevice: {device}\n";
        }
        if (o.Get("seed") is { } seed)
        {
            spec = spec with { Seed = int.TryParse(seed, out var v) && v >= 0 ? v : throw new UsageException($"--seed {seed}: a non-negative integer") };
            yaml += $"\n# --seed {seed}\nseed: {seed}\n";
        }
        var runsDir = o.Get("runs-dir") ?? "runs";
        if (o.Flag("engine") || !Cluster.Node.Actors.RunCoordinator.RunsOnActors(spec.Method))
        {
            new Runner(new RunnerOptions { RunsRoot = runsDir, RunId = o.Get("run-id") }, stdout).Run(spec);
            return 0;
        }
        return RunEmbedded(file, ReplaceKeys(yaml), spec, runsDir, o.Get("run-id"), stdout).GetAwaiter().GetResult();
    }

    /// <summary>--device/--seed were appended as later keys; YAML forbids duplicates, so drop the earlier ones.</summary>
    private static string ReplaceKeys(string yaml)
    {
        var lines = yaml.Split('\n').ToList();
        foreach (var key in new[] { "device:", "seed:" })
        {
            var idx = lines.Select((l, i) => (l, i)).Where(x => x.l.StartsWith(key)).Select(x => x.i).ToList();
            foreach (var i in idx.SkipLast(1)) lines[i] = "# (overridden) " + lines[i];
        }
        return string.Join('\n', lines);
    }

    /// <summary>A one-node cluster in this process: SQLite journal and blobs in the run directory.</summary>
    private static async Task<int> RunEmbedded(string file, string yaml, RunSpec spec, string runsDir, string? runId, TextWriter stdout)
    {
        runId ??= $"{spec.Name}-{DateTime.UtcNow:yyyyMMdd-HHmmss}";
        var dir = Path.Combine(runsDir, runId);
        Directory.CreateDirectory(dir);
        var specFile = Path.Combine(dir, "submitted.yaml");
        if (!File.Exists(specFile)) await File.WriteAllTextAsync(specFile, yaml);
        else if (await File.ReadAllTextAsync(specFile) != yaml)
            throw new InvalidOperationException($"run {runId} exists in {dir} with a different spec; choose another --run-id");
        var options = new NodeOptions
        {
            Persistence = PersistenceOptions.Sqlite(Path.Combine(dir, "journal.db")),
            StoreDir = Path.Combine(dir, "blobs"),
            RunsDir = runsDir,
            LogLevel = "WARNING",
        };
        stdout.WriteLine($"[run] {runId}: {SpecParser.MethodName(spec.Method)} through the actor pipeline (embedded one-node cluster, journal {options.Persistence.ConnectionString.Split(';')[0]})");
        await using var node = await ClusterNode.StartAsync(options);
        var wall = System.Diagnostics.Stopwatch.StartNew();
        await RunClient.SubmitAsync(node.Coordinator, specFile, runId, TimeSpan.FromSeconds(60));
        var final = await RunClient.FollowAsync(node.Coordinator, runId, stdout, TimeSpan.FromSeconds(2));
        stdout.WriteLine(final.State == RunState.Completed
            ? $"[result] student {final.StudentAccuracy:F2}%, teacher {final.TeacherAccuracy:F2}%, {wall.Elapsed.TotalSeconds:F0} s -> {Path.Combine(dir, "result.json")}"
            : $"[result] run {runId} failed: {final.Message}");
        return final.State == RunState.Completed ? 0 : 1;
    }

    private static async Task<int> Serve(Options o, TextWriter stdout)
    {
        var options = o.ToNodeOptions([Roles.Seed], 4053);
        if (options.Seeds.Count == 0) options = options with { Seeds = [$"{options.Hostname}:{options.Port}"] };
        await using var node = await ClusterNode.StartAsync(options);
        stdout.WriteLine($"[serve] seed node up at {node.Address}; journal {options.Persistence.Provider}; store {options.StoreDir}");
        await node.WaitForShutdownAsync();
        return 0;
    }

    /// <summary>A short-lived client member (no roles): joins, asks, leaves.</summary>
    private static async Task<ClusterNode> Client(Options o)
    {
        if (o.Get("seeds") is null) throw new UsageException("--seeds host:port of the cluster's seed node(s) is required");
        var tmp = Path.Combine(Path.GetTempPath(), $"clusterdistill-client-{Environment.ProcessId}");
        var options = o.ToNodeOptions(["client"], 0) with
        {
            Persistence = PersistenceOptions.Sqlite(Path.Combine(tmp, "unused.db")),
            StoreDir = Path.Combine(tmp, "blobs"),
            LogLevel = "WARNING",
        };
        return await ClusterNode.StartAsync(options, TimeSpan.FromSeconds(30));
    }

    private static async Task<int> Submit(Options o, TextWriter stdout)
    {
        if (o.Positional.Count != 1) throw new UsageException("submit takes exactly one spec file");
        SpecParser.Load(o.Positional[0]);   // refuse a bad spec before contacting anyone
        await using var node = await Client(o);
        var runId = await RunClient.SubmitAsync(node.Coordinator, o.Positional[0], o.Get("run-id"), TimeSpan.FromSeconds(30));
        stdout.WriteLine($"submitted {runId}");
        if (!o.Flag("follow")) return 0;
        var final = await RunClient.FollowAsync(node.Coordinator, runId, stdout, TimeSpan.FromSeconds(2));
        return final.State == RunState.Completed ? 0 : 1;
    }

    private static async Task<int> Status(Options o, TextWriter stdout)
    {
        await using var node = await Client(o);
        var runs = await RunClient.StatusAsync(node.Coordinator, o.Get("run-id"), TimeSpan.FromSeconds(30));
        if (runs.Length == 0) stdout.WriteLine("no runs");
        foreach (var r in runs) stdout.WriteLine(RunClient.Format(r));
        return 0;
    }

    private static int Validate(Options o, TextWriter stdout)
    {
        if (o.Positional.Count == 0) throw new UsageException("validate takes one or more spec files");
        foreach (var f in o.Positional)
        {
            var s = SpecParser.Load(f);
            stdout.WriteLine($"{f}: ok ({SpecParser.MethodName(s.Method)}, {s.Data.Name}, student {s.Student.Arch})");
        }
        return 0;
    }

    private static int Bench(Options o, TextWriter stdout)
    {
        if (o.Flag("cluster"))
        {
            var rows = Benchmarks.ClusterBench.Run(stdout, o.Flag("quick"));
            var path = o.Get("out") ?? Path.Combine("results", "bench-cluster.json");
            Benchmarks.ClusterBench.Save(rows, path, stdout);
            stdout.WriteLine($"saved {path} and {Path.ChangeExtension(path, ".md")}");
            return 0;
        }
        var device = o.Get("device") ?? "cpu";
        var table = Distill.Engine.Benchmarks.Benchmarks.Run(device, o.Flag("quick"), stdout);
        var output = o.Get("out") ?? Path.Combine("results", $"bench-{table.Device}.json");
        table.Save(output);
        stdout.WriteLine($"saved {output} and {Path.ChangeExtension(output, ".md")}");
        return 0;
    }
}

