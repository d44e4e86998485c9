using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;
using Cluster.Node.Security;
using Cluster.Node.Transport;

namespace Cluster.Tests.Cluster;

/// <summary>Certificates from scripts/make-test-ca.sh: two nodes of one authority, and a stranger from another.</summary>
public sealed class TestCertificates : IDisposable
{
    public TestCertificates()
    {
        Root = Path.Combine(Path.GetTempPath(), $"cd-tls-{Guid.NewGuid():N}");
        Make(Path.Combine(Root, "cluster"), "a", "b", "c");
        Make(Path.Combine(Root, "other"), "stranger");
    }

    public string Root { get; }
    public string Node(string name) => Path.Combine(Root, "cluster", name);
    public string Stranger => Path.Combine(Root, "other", "stranger");

    private static void Make(string dir, params string[] names)
    {
        var psi = new ProcessStartInfo("bash", [Path.Combine(Repo.Root(), "scripts", "make-test-ca.sh"), dir, .. names]) { RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException("make-test-ca.sh failed: " + err);
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, true); } catch (IOException) { }
    }
}

/// <summary>
/// The data plane over mutually authenticated TLS: nodes of one authority exchange gradient
/// chunks; a peer without a certificate, with one from another authority, or speaking plain TCP
/// is refused in the handshake, and nothing it sends is delivered.
/// </summary>
public sealed class DataPlaneTlsTests(TestCertificates certificates) : IClassFixture<TestCertificates>, IAsyncDisposable
{
    private const long Limit = 4 << 20;
    private readonly List<DataPlane> planes = [];
    private readonly ConcurrentQueue<string> warnings = new();

    private (DataPlane Plane, BlockingCollection<object> Delivered) Start(string node)
    {
        var delivered = new BlockingCollection<object>();
        var plane = DataPlane.Start("127.0.0.1", 0, "127.0.0.1", Limit, delivered.Add, _ => { }, warnings.Enqueue, tls: NodeTls.Load(certificates.Node(node)));
        planes.Add(plane);
        return (plane, delivered);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var p in planes) await p.DisposeAsync();
    }

    private static GradientChunk Chunk(int step)
    {
        var data = new byte[4000];
        new Random(step).NextBytes(data);
        return new GradientChunk("r/student/1", step, 0, 0, 1, 0, new TensorPayload([1000], WireDType.Float32, data));
    }

    /// <summary>The protocol's hello and one well-formed gradient chunk frame, as a peer would write them.</summary>
    private static byte[] HelloAndFrame(GradientChunk chunk)
    {
        var buffer = new ArrayBufferWriter<byte>();
        buffer.Write(DataPlane.Hello);
        var bulk = DataPlane.Frame(buffer, chunk, Limit);
        buffer.Write(bulk.Span);
        return buffer.WrittenSpan.ToArray();
    }

    [Fact]
    public void Nodes_of_one_authority_exchange_chunks_over_tls()
    {
        var (a, _) = Start("a");
        var (b, delivered) = Start("b");
        for (var i = 1; i <= 5; i++) a.Send(b.Endpoint, Chunk(i));
        for (var i = 1; i <= 5; i++)
        {
            Assert.True(delivered.TryTake(out var m, TimeSpan.FromSeconds(10)), "nothing arrived: " + string.Join("\n", warnings));
            var got = Assert.IsType<GradientChunk>(m);
            Assert.Equal(i, got.Step);
            Assert.Equal(Chunk(i).Values.Data, got.Values.Data);
        }
        Assert.Equal(0, b.Refused);
    }

    [Fact]
    public async Task A_peer_without_the_authoritys_certificate_cannot_deliver_a_gradient_chunk()
    {
        var (b, delivered) = Start("b");
        var port = int.Parse(b.Endpoint.Split(':')[1]);
        var bytes = HelloAndFrame(Chunk(7));

        // plain TCP: the hello and a valid frame, where a TLS handshake is expected
        using (var plain = new TcpClient())
        {
            await plain.ConnectAsync("127.0.0.1", port);
            var s = plain.GetStream();
            try { await s.WriteAsync(bytes); } catch (IOException) { }
            await ReadToEnd(s);   // until the node closes it (at most a TLS alert comes back)
        }
        // TLS with no client certificate, and TLS with a certificate from another authority
        foreach (var (_, client) in new[] { ("no certificate", (X509Folder?)null), ("another authority", new X509Folder(certificates.Stranger)) })
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync("127.0.0.1", port);
            using var tls = new SslStream(tcp.GetStream());
            var options = new SslClientAuthenticationOptions
            {
                TargetHost = "clusterdistill",
                RemoteCertificateValidationCallback = (_, _, _, _) => true,   // the attacker trusts anyone
                ClientCertificates = client is null ? null : [NodeTls.Load(client.Path).Certificate],
            };
            try
            {
                // TLS 1.3: the client's handshake may finish before the node's verdict on its certificate
                await tls.AuthenticateAsClientAsync(options);
                await tls.WriteAsync(bytes);
                await ReadToEnd(tls);
            }
            catch (Exception e) when (e is AuthenticationException or IOException) { }
        }
        await Task.Delay(500);
        Assert.Empty(delivered);
        Assert.Equal(0, b.Received);
        Assert.True(b.Refused >= 3, $"{b.Refused} refused: " + string.Join("\n", warnings));
        Assert.Contains(warnings, w => w.Contains("did not authenticate"));
    }

    [Fact]
    public void A_node_refuses_tls_material_that_does_not_hold_together()
    {
        var dir = Path.Combine(certificates.Root, "mixed");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(certificates.Node("a"), "tls.crt"), Path.Combine(dir, "tls.crt"));
        File.Copy(Path.Combine(certificates.Node("a"), "tls.key"), Path.Combine(dir, "tls.key"));
        File.Copy(Path.Combine(certificates.Stranger, "ca.crt"), Path.Combine(dir, "ca.crt"));
        var e = Assert.Throws<InvalidDataException>(() => NodeTls.Load(dir));
        Assert.Contains("does not chain to", e.Message);
        var missing = Assert.Throws<FileNotFoundException>(() => NodeTls.Load(certificates.Root));
        Assert.Contains("tls.crt is missing", missing.Message);
    }

    private static async Task<int> ReadToEnd(Stream s)
    {
        var buffer = new byte[4096];
        var total = 0;
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            int n;
            while ((n = await s.ReadAsync(buffer, cts.Token)) > 0) total += n;
        }
        catch (Exception e) when (e is IOException or AuthenticationException) { }
        return total;
    }

    private sealed record X509Folder(string Path);
}
