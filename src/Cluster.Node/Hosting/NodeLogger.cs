using Akka.Event;
using Cluster.Node.Transport;

namespace Cluster.Node.Hosting;

/// <summary>
/// Akka's console logger, except for connections to the Akka port that are not Akka at all (a port
/// scanner, a health check speaking HTTP, garbage): DotNetty reports each as an ERROR with a full
/// stack trace. Here each is one WARNING naming the peer and the reason, ten per 10 s at most, the
/// rest counted into the next line. And a warning repeated word for word by the same source (Akka's
/// "No coordinator found to register" every 2 s while no node hosts a shard region) is printed once
/// a minute, with the count of the repeats. A port that cannot be bound is one line, not a stack trace.
/// </summary>
/// <remarks>With clusterdistill.log-format = json (`--log-format json`) each event is one JSON object per line.</remarks>
public sealed class NodeLogger : DefaultLogger
{
    private static readonly Throttle Malformed = new(TimeSpan.FromSeconds(10), burst: 10);
    private static readonly Dictionary<string, Throttle> Repeated = [];
    private bool? json;

    protected override void Print(LogEvent logEvent)
    {
        if (Filter(logEvent) is not { } e) return;
        json ??= Context.System.Settings.Config.GetString("clusterdistill.log-format", "text") == "json";
        if (json == true) Console.Out.WriteLine(Json(e));
        else base.Print(e);
    }

    /// <summary>The event as it is printed (a malformed connection as one line, a repeat counted), or null when it is held back.</summary>
    private static LogEvent? Filter(LogEvent logEvent)
    {
        if (MalformedConnection(logEvent) is { } what)
        {
            if (!Malformed.Allow(out var suppressed)) return null;
            return new Warning(logEvent.LogSource, logEvent.LogClass, what + (suppressed > 0 ? $" ({suppressed} more since the last such line, unlogged)" : ""));
        }
        // a port in use: the command says so in one line as it exits, so the log's line has no stack trace
        if (logEvent is Error { Cause: { } cause } && NodeActorSystem.BindFailure(cause) is { } bind)
            return new Error(null, logEvent.LogSource, logEvent.LogClass, bind);
        if (logEvent is Warning { Cause: null } w && w.Message?.ToString() is { } text)
        {
            // the logger is one actor: no other thread touches the table
            if (Repeated.Count > 4096) Repeated.Clear();
            var key = w.LogSource + "\n" + text;
            if (!Repeated.TryGetValue(key, out var throttle)) Repeated[key] = throttle = new Throttle(TimeSpan.FromMinutes(1), burst: 1);
            if (!throttle.Allow(out var repeats)) return null;
            if (repeats > 0) return new Warning(w.LogSource, w.LogClass, $"{text} ({repeats} more times since it was last printed, unlogged)");
        }
        return logEvent;
    }

    /// <summary>A program's own line (a banner, "up at"): as it is, or as a JSON object like the log's when the node logs JSON.</summary>
    public static string Line(string format, string source, string message, string level = "info") =>
        format != "json" ? $"[{source}] {message}" : System.Text.Json.JsonSerializer.Serialize(new
        {
            time = DateTime.UtcNow.ToString("O", System.Globalization.CultureInfo.InvariantCulture), level, source, message,
        });

    /// <summary>
    /// The error that ends a program before or outside its logger ("error: ..."): a JSON object at
    /// level error when its command line asked for --log-format json, so that a log collector
    /// parsing every line reads why the node stopped.
    /// </summary>
    public static string Fatal(IReadOnlyList<string> args, string source, string message)
    {
        var json = false;
        for (var i = 0; i < args.Count; i++)
            if (args[i] == "--log-format" && i + 1 < args.Count) json = args[i + 1] == "json";
            else if (args[i].StartsWith("--log-format=", StringComparison.Ordinal)) json = args[i] == "--log-format=json";
        return json ? Line("json", source, message, "error") : $"error: {message}";
    }

    /// <summary>One line of JSON: time (UTC, ISO 8601), level, source, class, thread, message, and the error's text for an error with a cause.</summary>
    public static string Json(LogEvent e) => System.Text.Json.JsonSerializer.Serialize(new
    {
        time = e.Timestamp.ToUniversalTime().ToString("O", System.Globalization.CultureInfo.InvariantCulture),
        level = e.LogLevel() switch { LogLevel.DebugLevel => "debug", LogLevel.InfoLevel => "info", LogLevel.WarningLevel => "warning", _ => "error" },
        source = e.LogSource,
        @class = e.LogClass?.FullName,
        thread = e.Thread?.ManagedThreadId,
        message = e.Message?.ToString(),
        error = (e as Error)?.Cause?.ToString(),
    });

    /// <summary>The one line for an error that says a connection sent bytes that are not Akka's framing (null: any other event).</summary>
    public static string? MalformedConnection(LogEvent e)
    {
        if (e is not Error { Cause: { } cause } || !e.LogSource.StartsWith("Tcp", StringComparison.Ordinal)) return null;
        var codec = cause;
        while (codec is not null && codec.GetType().Namespace != "DotNetty.Codecs") codec = codec.InnerException;
        if (codec is null) return null;
        var text = e.Message?.ToString() ?? "";
        // "Error caught channel [[local]->[peer]](Id=...)"
        var arrow = text.IndexOf("->", StringComparison.Ordinal);
        var end = arrow < 0 ? -1 : text.IndexOf("](Id", arrow, StringComparison.Ordinal);
        var peer = arrow >= 0 && end > arrow ? text[(arrow + 2)..end] : "an unknown peer";
        return $"refused a connection from {peer} that does not speak Akka's protocol: {codec.Message}";
    }
}
