using Akka.Event;

namespace Cluster.Node.Hosting;

/// <summary>
/// Akka's own console logger with `--log-format json`: what the actor system prints before its
/// loggers start and after they stop (at shutdown, "Remoting shut down") is a JSON line like every
/// other, so that a log collector reading one object per line never meets Akka's text format.
/// </summary>
public sealed class JsonStdoutLogger : MinimalLogger
{
    protected override void Log(object message) =>
        Console.Out.WriteLine(message is LogEvent e
            ? NodeLogger.Json(e)
            : NodeLogger.Line("json", "akka", message?.ToString() ?? ""));
}
