using Akka.Actor;
using Akka.Configuration;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;

namespace Cluster.Tests.Cluster;

/// <summary>
/// `--log-format json`: Akka's own console logger, which prints what the actor system says before
/// its loggers start and after they stop (at shutdown), is the JSON one; the text format keeps Akka's.
/// </summary>
public sealed class JsonLoggingTests
{
    [Theory]
    [InlineData("json", typeof(JsonStdoutLogger))]
    [InlineData("text", typeof(Akka.Event.StandardOutLogger))]
    public async Task Akkas_console_logger_prints_the_nodes_format(string format, Type expected)
    {
        var options = new NodeOptions
        {
            Persistence = PersistenceOptions.Sqlite(Path.Combine(Path.GetTempPath(), "unused.db")),
            StoreDir = Path.GetTempPath(), RunsDir = Path.GetTempPath(), MaxMessageBytes = 1 << 20, LogFormat = format,
        };
        using var system = ActorSystem.Create($"log-{format}", ConfigurationFactory.ParseString("akka.actor.provider = local").WithFallback(HoconBuilder.Build(options)));
        try { Assert.IsType(expected, system.Settings.StdoutLogger); }
        finally { await system.Terminate(); }
    }
}
