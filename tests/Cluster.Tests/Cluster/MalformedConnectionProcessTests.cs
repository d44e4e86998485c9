using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace Cluster.Tests.Cluster;

/// <summary>
/// Connections to the Akka port that do not speak Akka's protocol (an HTTP health check, a port
/// scanner's garbage) cost one WARNING line each, ten per 10 s at most, the rest counted into the
/// next line; never an ERROR with DotNetty's stack trace. A real seed process.
/// </summary>
[Collection(ProcessLanes.A)]
public sealed class MalformedConnectionProcessTests
{
    private static void Garbage(int port, int count, int seed)
    {
        var random = new Random(seed);
        for (var i = 0; i < count; i++)
        {
            using var client = new TcpClient();
            client.Connect("127.0.0.1", port);
            var bytes = new byte[64];
            random.NextBytes(bytes);
            // a length field over the frame limit either way: HTTP's "GET " or random bytes with the top bit clear
            if (i % 2 == 0) bytes = Encoding.ASCII.GetBytes("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            else bytes[0] = (byte)(0x40 | (bytes[0] & 0x3F));
            client.GetStream().Write(bytes);
            Thread.Sleep(20);
        }
    }

    [Fact]
    public void Should_log_garbage_connections_as_one_throttled_warning_each_without_stack_traces()
    {
        using var cluster = new ProcessCluster("garbage");
        var port = TestPorts.Block(2);
        cluster.Start(cluster.SeedBin, "seed.log", ["serve", "--port", port.ToString(), "--http-port", cluster.HttpPort.ToString(), .. cluster.Common]);
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (!cluster.Log("seed.log").Contains("seed node up at"))
        {
            Assert.True(DateTime.UtcNow < deadline, "the seed did not come up: " + cluster.Log("seed.log"));
            Thread.Sleep(250);
        }

        var started = DateTime.UtcNow;
        Garbage(port, 60, 1);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(8), "sending took too long for one throttle window");
        Thread.Sleep(2000);
        var log = cluster.Log("seed.log");
        var warnings = Regex.Matches(log, "refused a connection from .* that does not speak Akka's protocol: ").Count;
        Assert.True(warnings is >= 1 and <= 10, $"{warnings} warning lines for 60 garbage connections in one 10 s window:\n{log}");
        Assert.DoesNotContain("[ERROR]", log);
        Assert.DoesNotContain("DotNetty", log);
        Assert.DoesNotContain("   at ", log);

        // the next window's first line counts what the last one held back
        Thread.Sleep(TimeSpan.FromSeconds(10) - (DateTime.UtcNow - started) + TimeSpan.FromSeconds(1));
        Garbage(port, 1, 2);
        deadline = DateTime.UtcNow.AddSeconds(10);
        Match counted;
        while (!(counted = Regex.Match(cluster.Log("seed.log"), @"\((\d+) more since the last such line, unlogged\)")).Success)
        {
            Assert.True(DateTime.UtcNow < deadline, "no line counted the connections held back: " + cluster.Log("seed.log"));
            Thread.Sleep(250);
        }
        Assert.True(int.Parse(counted.Groups[1].Value) >= 60 - warnings, counted.Value);
    }
}
