using System.Net;
using System.Net.Sockets;
using System.Text;
using Cluster.Node.Http;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The CLI's API client against a seed that goes away in the middle of an answer (a real socket
/// that resets the connection): the one-line "cannot reach" error every command handles, never an
/// exception it does not.
/// </summary>
public sealed class ApiClientTests
{
    [Theory]
    [InlineData("")]                                                                                  // reset before a byte of the answer
    [InlineData("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n[{\"runId\":")]   // reset mid-body
    public async Task A_seed_that_resets_the_connection_mid_answer_is_unreachable_not_a_crash(string sentBeforeReset)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var server = Task.Run(async () =>
        {
            using var socket = await listener.AcceptSocketAsync();
            var buffer = new byte[8192];
            var request = "";
            while (!request.Contains("\r\n\r\n")) request += Encoding.ASCII.GetString(buffer, 0, await socket.ReceiveAsync(buffer));
            if (sentBeforeReset.Length > 0) await socket.SendAsync(Encoding.ASCII.GetBytes(sentBeforeReset));
            await Task.Delay(100);
            socket.LingerState = new LingerOption(true, 0);   // close with RST, as a process killed mid-answer
            socket.Close();
        });
        var tokenFile = Path.Combine(Path.GetTempPath(), $"cd-token-{Guid.NewGuid():N}");
        await File.WriteAllTextAsync(tokenFile, "0123456789abcdef0123456789abcdef\n");
        try
        {
            using var client = new ApiClient(new Uri($"http://127.0.0.1:{port}/"), ApiToken.ForClient(tokenFile), TimeSpan.FromSeconds(20));
            var e = await Assert.ThrowsAsync<ApiUnreachableException>(() => client.RunsAsync());
            Assert.StartsWith($"cannot reach the seed's API at http://127.0.0.1:{port}/", e.Message);
            await server;
        }
        finally { File.Delete(tokenFile); }
    }
}
