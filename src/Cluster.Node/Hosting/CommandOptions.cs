using Cluster.Node.Configuration;

namespace Cluster.Node.Hosting;

public sealed class UsageException(string message) : Exception(message);

/// <summary>--key value pairs, --flags and positional arguments.</summary>
public sealed class Options
{
    private readonly Dictionary<string, string?> named = [];
    public List<string> Positional { get; } = [];

    private static readonly HashSet<string> Flags = ["quick", "engine", "follow", "cluster"];

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

    /// <summary>--host, --port, --seeds, --db, --store, --runs-dir, --data-cache, --data-port: the node options every program shares.</summary>
    public NodeOptions ToNodeOptions(IReadOnlyList<string> roles, int defaultPort)
    {
        var host = Get("host") ?? "127.0.0.1";
        var port = Get("port") is { } p ? (int.TryParse(p, out var v) && v is >= 0 and < 65536 ? v : throw new UsageException($"--port {p}: 0-65535")) : defaultPort;
        var seeds = Get("seeds")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList() ?? [];
        var store = Get("store") ?? "store";
        int? dataPort = Get("data-port") switch
        {
            null => 0,
            "off" => null,
            var d => int.TryParse(d, out var dp) && dp is >= 0 and < 65536 ? dp : throw new UsageException($"--data-port {d}: 0-65535, or off"),
        };
        return new NodeOptions
        {
            Hostname = host,
            Port = port,
            Seeds = seeds,
            Roles = roles,
            Persistence = Get("db") is { } db ? PersistenceOptions.Parse(db) : PersistenceOptions.Sqlite(Path.Combine(store, "journal.db")),
            StoreDir = Path.Combine(store, "blobs"),
            RunsDir = Get("runs-dir") ?? "runs",
            DataCache = Get("data-cache"),
            DataPort = dataPort,
        };
    }

    public bool Flag(string key) => named.ContainsKey(key);
}
