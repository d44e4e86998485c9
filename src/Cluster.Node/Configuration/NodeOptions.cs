namespace Cluster.Node.Configuration;

public static class Roles
{
    /// <summary>Control plane: the run coordinator singleton lives on seed nodes.</summary>
    public const string Seed = "seed";
    /// <summary>Hosts entities: every kind, or the kinds (generator, teacher, student) named as roles too.</summary>
    public const string Gpu = "gpu";

    /// <summary>"slots:N": how many runs a GPU node takes at once (`--slots N`; one when absent).</summary>
    public const string SlotsPrefix = "slots:";

    /// <summary>A member's slots: from its "slots:N" role, one for a GPU node without one, none for another node.</summary>
    public static int SlotsOf(IEnumerable<string> roles)
    {
        var all = roles.ToArray();
        if (!all.Contains(Gpu)) return 0;
        return all.FirstOrDefault(r => r.StartsWith(SlotsPrefix, StringComparison.Ordinal)) is { } s && int.TryParse(s[SlotsPrefix.Length..], out var n) ? n : 1;
    }

    /// <summary>
    /// The layout: a GPU node hosts the entity kinds among its roles (each kind's shard region is
    /// restricted to nodes with that role), e.g. generators on some nodes and students on others
    /// (`Cluster.GpuNode join --hosts student`). A GPU node that names no kind hosts all three.
    /// Per run, the spec's cluster.layout picks among them by pool ("pool:NAME" roles, `--pool NAME`).
    /// </summary>
    public static IReadOnlyList<string> Expand(IReadOnlyList<string> roles)
    {
        string[] kinds = [Contracts.EntityKinds.Generator, Contracts.EntityKinds.Teacher, Contracts.EntityKinds.Student];
        return roles.Contains(Gpu) && !roles.Any(kinds.Contains) ? [.. roles, .. kinds] : roles;
    }
}

/// <summary>Where the journal lives: sqlite (embedded default, a file) or postgres (clusters).</summary>
public sealed record PersistenceOptions(string Provider, string ConnectionString)
{
    public static PersistenceOptions Sqlite(string file) => new("sqlite", $"Data Source={Path.GetFullPath(file)};Default Timeout=30;Pooling=True");

    public static PersistenceOptions Postgres(string connectionString) => new("postgres", connectionString);

    /// <summary>"sqlite:PATH" or "postgres:CONNECTION-STRING" (the --db option).</summary>
    public static PersistenceOptions Parse(string text)
    {
        var i = text.IndexOf(':');
        var (kind, rest) = i < 0 ? (text, "") : (text[..i], text[(i + 1)..]);
        return kind switch
        {
            "sqlite" when rest.Length > 0 => Sqlite(rest),
            "postgres" when rest.Length > 0 => Postgres(rest),
            _ => throw new ArgumentException($"--db '{text}': expected sqlite:PATH or postgres:Host=...;Username=...;Password=...;Database=..."),
        };
    }

    /// <summary>The journal's provider and connection string, any password left out: what it is called in messages, and whose events a <see cref="Storage.JournalWitness"/> vouches for.</summary>
    public string Described => $"{Provider}:{RedactedConnectionString}";

    public string RedactedConnectionString => string.Join(";", ConnectionString.Split(';')
        .Select(kv => kv.TrimStart().StartsWith("Password", StringComparison.OrdinalIgnoreCase) ? "Password=***" : kv));

    /// <summary>linq2db's provider name.</summary>
    public string LinqToDbProvider => Provider switch
    {
        "sqlite" => "SQLite.MS",
        "postgres" => "PostgreSQL.15",
        _ => throw new ArgumentException($"unknown persistence provider '{Provider}' (sqlite or postgres)"),
    };
}

/// <summary>
/// How a node finds the cluster without a static seed list: Akka.Management's Cluster.Bootstrap
/// asks a discovery method for the seed-capable nodes' management endpoints (the contact points),
/// joins the cluster they are in, or, where none is and this node may, forms one with them: the
/// contact point with the lowest address joins itself and the rest join it.
/// </summary>
/// <param name="Method">config (a fixed list of endpoints: processes on one machine) or kubernetes (the pods the label selector picks)</param>
/// <param name="Endpoints">config: the contact points' management endpoints, host:port</param>
/// <param name="ManagementPort">this node's management HTTP port (0: any free port)</param>
/// <param name="RequiredContactPoints">how many contact points must be seen before a new cluster is formed</param>
/// <param name="NewClusterAllowed">whether this node may form a new cluster (seed-capable nodes only: a GPU node only joins)</param>
/// <param name="LabelSelector">kubernetes: the selector of the seed pods</param>
public sealed record DiscoveryOptions(
    string Method,
    IReadOnlyList<string> Endpoints,
    int ManagementPort,
    int RequiredContactPoints,
    bool NewClusterAllowed,
    string LabelSelector = DiscoveryOptions.SeedSelector)
{
    public const string ServiceName = "clusterdistill-seed";
    public const string SeedSelector = "app.kubernetes.io/name=clusterdistill,app.kubernetes.io/component=seed";
    public const int DefaultManagementPort = 8558;

    /// <summary>"config:HOST:PORT,HOST:PORT,..." or "kubernetes" (the --discovery option).</summary>
    public static DiscoveryOptions Parse(string text, int managementPort, int? requiredContactPoints, bool newClusterAllowed)
    {
        if (text == "kubernetes")
            return new("kubernetes", [], managementPort, requiredContactPoints ?? 3, newClusterAllowed);
        if (!text.StartsWith("config:", StringComparison.Ordinal))
            throw new ArgumentException($"--discovery '{text}': expected kubernetes, or config:HOST:PORT[,HOST:PORT...] (the seed-capable nodes' management endpoints)");
        var endpoints = text["config:".Length..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var e in endpoints)
        {
            var i = e.LastIndexOf(':');
            if (i <= 0 || !int.TryParse(e[(i + 1)..], out var port) || port is < 1 or > 65535)
                throw new ArgumentException($"--discovery: '{e}' is not HOST:PORT");
        }
        if (endpoints.Length == 0) throw new ArgumentException("--discovery config: names no endpoint");
        if (requiredContactPoints > endpoints.Length)
            throw new ArgumentException($"--contact-points {requiredContactPoints}: the config names only {endpoints.Length} endpoint(s)");
        return new("config", endpoints, managementPort, requiredContactPoints ?? endpoints.Length, newClusterAllowed);
    }
}

/// <summary>Everything a node needs to start; <see cref="HoconBuilder"/> turns it into Akka configuration.</summary>
public sealed record NodeOptions
{
    public string SystemName { get; init; } = "clusterdistill";
    public string Hostname { get; init; } = "127.0.0.1";
    public int Port { get; init; }                           // 0 = any free port
    public IReadOnlyList<string> Seeds { get; init; } = [];  // host:port; empty = join self (embedded), or discovery
    /// <summary>Cluster.Bootstrap instead of <see cref="Seeds"/> (null: the static seed list).</summary>
    public DiscoveryOptions? Discovery { get; init; }
    /// <summary>Akka.Remote and the data plane over mutually authenticated TLS (null: plain TCP, the embedded default).</summary>
    public Security.NodeTls? Tls { get; init; }
    /// <summary>Akka's protocol in this cluster's addresses: with TLS, akka.ssl.tcp.</summary>
    public string Protocol => Tls is null ? "akka.tcp" : "akka.ssl.tcp";
    /// <summary>A cluster of one in this process: no seeds and no discovery.</summary>
    public bool Embedded => Seeds.Count == 0 && Discovery is null;
    public IReadOnlyList<string> Roles { get; init; } = [Configuration.Roles.Seed, Configuration.Roles.Gpu];
    public required PersistenceOptions Persistence { get; init; }
    /// <summary>Content-addressed blobs (checkpoints, image batches); shared storage in a cluster.</summary>
    public required string StoreDir { get; init; }
    /// <summary>Where the coordinator writes runs/&lt;run-id&gt;/ (result.json, events).</summary>
    public required string RunsDir { get; init; }
    /// <summary>Where the sweep coordinator writes sweeps/&lt;sweep-id&gt;/ (null: "sweeps" beside the runs directory).</summary>
    public string? SweepsDir { get; init; }
    public string SweepsPath => SweepsDir ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(RunsDir)) ?? ".", "sweeps");
    public string? DataCache { get; init; }
    public string? TeacherCache { get; init; }
    /// <summary>Largest message on the wire (also Akka.Remote's maximum frame).</summary>
    public long MaxMessageBytes { get; init; } = Contracts.Serialization.ContractCodec.DefaultMaxMessageBytes;
    /// <summary>Only for the rebalance-threshold arithmetic of Akka's extractor base: shards are one per entity (EntityMessageExtractor).</summary>
    public int NumberOfShards { get; init; } = 30;
    /// <summary>Split-brain resolver: how long the membership must be stable before unreachable nodes are downed.</summary>
    public TimeSpan DowningStableAfter { get; init; } = TimeSpan.FromSeconds(7);
    /// <summary>How long a silent node may go before it is unreachable.</summary>
    public TimeSpan HeartbeatPause { get; init; } = TimeSpan.FromSeconds(4);
    public string LogLevel { get; init; } = "INFO";
    /// <summary>text (Akka's lines) or json (one object per line, for log collectors).</summary>
    public string LogFormat { get; init; } = "text";
    /// <summary>
    /// TCP port of the data plane that carries batches and gradient chunks beside Akka.Remote
    /// (<see cref="Transport.DataPlane"/>): 0 = any free port (peers learn it from messages), null = off
    /// (everything through Akka.Remote).
    /// </summary>
    public int? DataPort { get; init; } = 0;
    /// <summary>Tests: serialize every local message too, so that nothing works only in-process.</summary>
    public bool SerializeAllMessages { get; init; }
    /// <summary>Whether the coordinator (re)starts unfinished runs' entities (off: a node opened only to record a cancel).</summary>
    public bool ResumeRuns { get; init; } = true;
    /// <summary>A non-seed node whose cluster has had no seed this long, while a seed answers elsewhere, leaves to rejoin (null: never).</summary>
    public TimeSpan? SeedLossRejoinAfter { get; init; } = TimeSpan.FromSeconds(10);
}
