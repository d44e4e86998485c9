using Akka.Event;
using Cluster.Node.Transport;

namespace Cluster.Node.Hosting;

/// <summary>
/// Akka's console logger, except for connections to the Akka port that are not Akka at all (a port
/// scanner, a health check speaking HTTP, garbage): DotNetty reports each as an ERROR with a full
/// stack trace. Here each is one WARNING naming the peer and the reason, ten per 10 s at most, the
/// rest counted into the next line. And a warning repeated word for word by the same source (Akka's
/// "No coordinator found to register" every 2 s while no node hosts a shard region) is printed once
/// a minute, with the count of the repeats.
/// </summary>
public sealed class NodeLogger : DefaultLogger
{
    private static readonly Throttle Malformed = new(TimeSpan.FromSeconds(10), burst: 10);
    private static readonly Dictionary<string, Throttle> Repeated = [];

    protected override void Print(LogEvent logEvent)
    {
        if (MalformedConnection(logEvent) is not { } what)
        {
            if (logEvent is Warning { Cause: null } w && w.Message?.ToString() is { } text)
            {
                // the logger is one actor: no other thread touches the table
                if (Repeated.Count > 4096) Repeated.Clear();
                var key = w.LogSource + "\n" + text;
                if (!Repeated.TryGetValue(key, out var throttle)) Repeated[key] = throttle = new Throttle(TimeSpan.FromMinutes(1), burst: 1);
                if (!throttle.Allow(out var repeats)) return;
                if (repeats > 0) logEvent = new Warning(w.LogSource, w.LogClass, $"{text} ({repeats} more times since it was last printed, unlogged)");
            }
            base.Print(logEvent);
            return;
        }
        if (!Malformed.Allow(out var suppressed)) return;
        base.Print(new Warning(logEvent.LogSource, logEvent.LogClass,
            what + (suppressed > 0 ? $" ({suppressed} more since the last such line, unlogged)" : "")));
    }

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
