using System.CommandLine;
using System.CommandLine.Parsing;
using System.Runtime.InteropServices;
using Cluster.Node.Configuration;

namespace Cluster.Node.Hosting;

/// <summary>
/// The node options every program shares (--host, --port, --seeds, --db, --store, --runs-dir,
/// --data-cache, --data-port), declared once for System.CommandLine, each checked as it is parsed.
/// </summary>
public sealed class NodeCommandOptions
{
    public Option<string> Host { get; } = new("--host") { Description = "address this node binds and advertises", DefaultValueFactory = _ => "127.0.0.1" };
    public Option<int?> Port { get; } = new("--port") { Description = "Akka.Remote port (0: any free port)", CustomParser = r => PortValue(r, allowOff: false) };
    public Option<string[]> Seeds { get; } = new("--seeds")
    {
        Description = "the cluster's seed nodes, host:port[,host:port...]",
        CustomParser = r =>
        {
            var seeds = r.Tokens.SelectMany(t => t.Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
            // a seed without a port would be retried for ever as port -1
            foreach (var s in seeds)
                if (s.LastIndexOf(':') is var colon && (colon <= 0 || !int.TryParse(s[(colon + 1)..], out var port) || port is < 1 or > 65535))
                    r.AddError($"--seeds {s}: not host:port (port 1-65535)");
            return seeds;
        },
    };
    public Option<PersistenceOptions?> Db { get; } = new("--db")
    {
        Description = "the journal: sqlite:FILE or postgres:CONNECTION-STRING (default: $CLUSTERDISTILL_DB, else sqlite in --store). " +
                      "A password belongs in $CLUSTERDISTILL_DB or $PGPASSWORD, not here, where the process list shows it",
        CustomParser = r =>
        {
            try { return PersistenceOptions.Parse(r.Tokens.Single().Value); }
            catch (ArgumentException e) { r.AddError(e.Message); return null; }
        },
    };
    public Option<string> Store { get; } = new("--store") { Description = "folder of the blob store (shared by every node)", DefaultValueFactory = _ => "store" };
    public Option<string> RunsDir { get; } = new("--runs-dir") { Description = "folder of run directories", DefaultValueFactory = _ => "runs" };
    public Option<string?> DataCache { get; } = new("--data-cache") { Description = "folder of downloaded datasets" };
    /// <summary>null: off; 0: any free port.</summary>
    public Option<int?> DataPort { get; } = new("--data-port")
    {
        Description = "TCP data-plane port for batches and gradients (0: any free port; off: through Akka)",
        CustomParser = r => PortValue(r, allowOff: true),
    };

    public Option<string?> Discovery { get; } = new("--discovery")
    {
        Description = "find the cluster with Cluster.Bootstrap instead of --seeds: kubernetes (the seed pods, by label), or config:HOST:PORT[,HOST:PORT...] " +
                      "(the seed-capable nodes' management endpoints; processes on one machine). Default: $CLUSTERDISTILL_DISCOVERY",
    };
    public Option<int?> ManagementPort { get; } = new("--management-port")
    {
        Description = $"this node's Akka.Management HTTP port, which Cluster.Bootstrap's contact points probe (with --discovery; default {DiscoveryOptions.DefaultManagementPort}, 0: any free port)",
        CustomParser = r => PortValue(r, allowOff: false),
    };
    public Option<int?> ContactPoints { get; } = new("--contact-points")
    {
        Description = "how many contact points discovery must find before the first cluster is formed (default: all the config names; 3 on kubernetes)",
    };

    public Option<string?> Tls { get; } = new("--tls")
    {
        Description = "a folder with tls.crt, tls.key and ca.crt (a Kubernetes TLS Secret): Akka.Remote and the data plane run over mutually " +
                      "authenticated TLS, and only nodes whose certificates chain to ca.crt may join or send (default: $CLUSTERDISTILL_TLS_DIR; none: plain TCP)",
    };

    public Option<string> LogLevel { get; } = new("--log-level") { Description = "debug, info, warning or error", DefaultValueFactory = _ => "info" };
    public Option<string> LogFormat { get; } = new("--log-format") { Description = "text, or json: one object per line (time, level, source, class, thread, message, error)", DefaultValueFactory = _ => "text" };

    /// <summary>null: no HTTP endpoint; 0: any free port.</summary>
    public Option<int?> HttpPort { get; } = new("--http-port")
    {
        Description = "HTTP port of /health/live, /health/ready and /metrics (and on a seed the API and dashboard); off: none",
        CustomParser = r => PortValue(r, allowOff: true),
    };

    /// <summary>The node's HTTP port: the option's, else the command's default (null: off).</summary>
    public int? HttpPortOf(ParseResult p, int? fallback) => p.GetResult(HttpPort) is null ? fallback : PortOrOff(p, HttpPort);

    /// <summary>A port option given on the command line: its port, or null for "off" (read from the token: the parser's null for a nullable int does not read back).</summary>
    private static int? PortOrOff(ParseResult p, Option<int?> option) =>
        p.GetResult(option) is { Tokens: [{ Value: "off" }] } ? null : p.GetValue(option);

    /// <summary>$CLUSTERDISTILL_DB, as --db takes it: how a Secret gives the journal's connection string without a command line.</summary>
    public const string DbVariable = "CLUSTERDISTILL_DB";

    private static PersistenceOptions? DbFromEnvironment()
    {
        var text = Environment.GetEnvironmentVariable(DbVariable);
        if (string.IsNullOrWhiteSpace(text)) return null;
        try { return PersistenceOptions.Parse(text.Trim()); }
        catch (ArgumentException) { throw new ArgumentException($"${DbVariable} is neither sqlite:PATH nor postgres:CONNECTION-STRING (its value is not shown: it may hold a password)"); }
    }

    /// <summary>Refuses a value of `option` that is not an integer in [min, max], naming the option (the value is read from its token: one that does not parse cannot be read back).</summary>
    public static void RequireIntIn(Option<int?> option, int min, int max) => option.Validators.Add(r =>
    {
        if (r.Tokens.Count == 1 && !(int.TryParse(r.Tokens[0].Value, out var v) && v >= min && v <= max))
            r.AddError($"{option.Name} {r.Tokens[0].Value}: an integer from {min} to {max}");
    });

    private static int? PortValue(ArgumentResult r, bool allowOff)
    {
        var v = r.Tokens.Single().Value;
        if (allowOff && v == "off") return null;
        if (int.TryParse(v, out var p) && p is >= 0 and < 65536) return p;
        r.AddError($"{(r.Parent as OptionResult)?.Option.Name ?? "port"} {v}: 0-65535{(allowOff ? ", or off" : "")}");
        return null;
    }

    /// <summary>Adds the options to a command; seedsRequired: the command must be told where the cluster is (--seeds or --discovery).</summary>
    public void AddTo(Command command, bool seedsRequired = false, bool dataPort = false, bool http = false)
    {
        LogLevel.AcceptOnlyFromAmong("debug", "info", "warning", "error");
        LogFormat.AcceptOnlyFromAmong("text", "json");
        Discovery.Validators.Add(r =>
        {
            try { DiscoveryOptions.Parse(r.GetValueOrDefault<string?>() ?? "", DiscoveryOptions.DefaultManagementPort, null, false); }
            catch (ArgumentException e) { r.AddError(e.Message); }
        });
        RequireIntIn(ContactPoints, 1, 100);
        foreach (var o in new Option[] { Host, Port, Seeds, Discovery, ManagementPort, ContactPoints, Tls, Db, Store, RunsDir, DataCache, LogLevel, LogFormat }) command.Add(o);
        command.Validators.Add(r =>
        {
            var seeds = r.GetResult(Seeds) is not null;
            var discovery = r.GetResult(Discovery) is not null || Environment.GetEnvironmentVariable(DiscoveryVariable) is { Length: > 0 };
            if (seeds && r.GetResult(Discovery) is not null) r.AddError("--seeds and --discovery: give one of them");
            else if (seedsRequired && !seeds && !discovery) r.AddError("where is the cluster? give --seeds HOST:PORT or --discovery");
        });
        if (dataPort) command.Add(DataPort);
        if (http) command.Add(HttpPort);
    }

    /// <summary>$CLUSTERDISTILL_DISCOVERY, as --discovery takes it (the Kubernetes manifests set it).</summary>
    public const string DiscoveryVariable = "CLUSTERDISTILL_DISCOVERY";

    public NodeOptions ToNodeOptions(ParseResult p, IReadOnlyList<string> roles, int defaultPort)
    {
        var store = p.GetValue(Store)!;
        var seeds = p.GetValue(Seeds) ?? [];
        var discovery = p.GetValue(Discovery) ?? (seeds.Length == 0 ? Environment.GetEnvironmentVariable(DiscoveryVariable) : null);
        var tls = p.GetValue(Tls) ?? Environment.GetEnvironmentVariable(Security.NodeTls.FolderVariable);
        return new NodeOptions
        {
            Hostname = p.GetValue(Host)!,
            Port = p.GetValue(Port) ?? defaultPort,
            Seeds = seeds,
            Tls = string.IsNullOrWhiteSpace(tls) ? null : Security.NodeTls.Load(tls),
            Discovery = string.IsNullOrWhiteSpace(discovery) ? null
                : DiscoveryOptions.Parse(discovery.Trim(), p.GetValue(ManagementPort) ?? DiscoveryOptions.DefaultManagementPort, p.GetValue(ContactPoints),
                    newClusterAllowed: roles.Contains(Configuration.Roles.Seed)),
            Roles = roles,
            Persistence = p.GetValue(Db) ?? DbFromEnvironment() ?? PersistenceOptions.Sqlite(Path.Combine(store, "journal.db")),
            StoreDir = Path.Combine(store, "blobs"),
            RunsDir = p.GetValue(RunsDir)!,
            DataCache = p.GetValue(DataCache),
            DataPort = p.GetResult(DataPort) is null ? 0 : PortOrOff(p, DataPort),
            LogLevel = p.GetValue(LogLevel)!.ToUpperInvariant(),
            LogFormat = p.GetValue(LogFormat)!,
        };
    }
}

/// <summary>
/// Runs a System.CommandLine root: a parse error (an unknown option, a missing or bad value) is
/// printed with the option's name and exits 2; --help works on every command.
/// </summary>
public static class CommandRunner
{
    public static int Invoke(string program, RootCommand root, string[] args, TextWriter stdout, TextWriter stderr)
    {
        var result = root.Parse(args);
        if (result.Errors.Count > 0 && result.Action is not System.CommandLine.Help.HelpAction)
        {
            // the first unknown word is the mistake; what follows it (its value) and "Required command was not provided" are its echoes
            var shown = result.UnmatchedTokens.Count == 0 ? result.Errors
                : result.Errors.Where(e => e.Message.Contains($"'{result.UnmatchedTokens[0]}'", StringComparison.Ordinal)).Take(1).ToList() is { Count: > 0 } first ? first : result.Errors;
            foreach (var e in shown) stderr.WriteLine($"error: {e.Message}");
            // the whole path of a subcommand (data fetch), not its last word
            var names = new List<string>();
            for (var c = result.CommandResult; c is not null && c.Command is not RootCommand; c = c.Parent as CommandResult) names.Insert(0, c.Command.Name);
            var command = string.Join(' ', names);
            stderr.WriteLine($"see '{program}{(command.Length > 0 ? " " + command : "")} --help'");
            return 2;
        }
        // Ctrl+C and SIGTERM cancel the command's token; it then has StopTimeout to leave the cluster and
        // save what it must (a pod's grace period is 30 s by default) before the process ends. The
        // signals are handled here, not by System.CommandLine's handler: that one cancels a token
        // source its invocation has already disposed when the command ends as the signal comes (an
        // unhandled ObjectDisposedException on the signal thread, exit 134)
        var stop = new CancellationTokenSource();   // not disposed: a signal may still come as the process ends
        void OnSignal(PosixSignalContext context)
        {
            // a second Ctrl+C or SIGTERM while the command stops ends the process at once (the default)
            if (stop.IsCancellationRequested) return;
            context.Cancel = true;
            stop.Cancel();
            var code = context.Signal == PosixSignal.SIGINT ? 130 : 143;
            _ = Task.Delay(StopTimeout).ContinueWith(_ => Environment.Exit(code), TaskScheduler.Default);
        }
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        return result.InvokeAsync(new InvocationConfiguration
        {
            Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null,
        }, stop.Token).GetAwaiter().GetResult();
    }

    /// <summary>How long a command has after Ctrl+C or SIGTERM before the process ends anyway (exit 130 or 143).</summary>
    public static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(25);
}
