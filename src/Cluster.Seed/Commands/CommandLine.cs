using Distill.Engine.Benchmarks;
using Distill.Engine.Runs;
using Distill.Engine.Specs;

namespace Cluster.Seed.Commands;

/// <summary>The control plane's commands. Exit codes: 0 ok, 1 run failed, 2 bad input.</summary>
public static class CommandLine
{
    public const string Usage = """
        usage: Cluster.Seed <command> [options]
          run <spec.yaml> [--runs-dir DIR] [--run-id ID] [--device cpu|cuda|auto] [--seed N]
                                   run a spec embedded in this process (writes runs/<run-id>/)
          validate <spec.yaml>...  check specs without running them
          bench [--device cpu|cuda|auto] [--out FILE] [--quick]
                                   time the engine's workloads; prints and saves a table
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
                "validate" => Validate(opts, stdout),
                "bench" => Bench(opts, stdout),
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
        catch (Exception e) when (e is FileNotFoundException or InvalidDataException or ArgumentException or InvalidOperationException)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    private static int Run(Options o, TextWriter stdout)
    {
        if (o.Positional.Count != 1) throw new UsageException("run takes exactly one spec file");
        var spec = SpecParser.Load(o.Positional[0]);
        if (o.Get("device") is { } device) spec = spec with { Device = device is "cpu" or "cuda" or "auto" ? device : throw new UsageException($"--device {device}: cpu, cuda or auto") };
        if (o.Get("seed") is { } seed) spec = spec with { Seed = int.TryParse(seed, out var s) && s >= 0 ? s : throw new UsageException($"--seed {seed}: a non-negative integer") };
        var runner = new Runner(new RunnerOptions { RunsRoot = o.Get("runs-dir") ?? "runs", RunId = o.Get("run-id") }, stdout);
        runner.Run(spec);
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
        var device = o.Get("device") ?? "cpu";
        var table = Benchmarks.Run(device, o.Flag("quick"), stdout);
        var output = o.Get("out") ?? Path.Combine("results", $"bench-{table.Device}.json");
        table.Save(output);
        stdout.WriteLine($"saved {output} and {Path.ChangeExtension(output, ".md")}");
        return 0;
    }
}

public sealed class UsageException(string message) : Exception(message);

/// <summary>--key value pairs, --flags and positional arguments.</summary>
public sealed class Options
{
    private readonly Dictionary<string, string?> named = [];
    public List<string> Positional { get; } = [];

    private static readonly HashSet<string> Flags = ["quick"];

    public static Options Parse(string[] args)
    {
        var o = new Options();
        for (var i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--")) { o.Positional.Add(args[i]); continue; }
            var key = args[i][2..];
            if (Flags.Contains(key)) { o.named[key] = null; continue; }
            if (i + 1 >= args.Length) throw new UsageException($"--{key} needs a value");
            o.named[key] = args[++i];
        }
        return o;
    }

    public string? Get(string key) => named.TryGetValue(key, out var v) ? v : null;
    public bool Flag(string key) => named.ContainsKey(key);
}
