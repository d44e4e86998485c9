using Distill.Engine.Pipeline;
using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using Cluster.Contracts;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Serialization;
using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;
using Cluster.Node.Transport;

namespace Cluster.Tests.Cluster;

/// <summary>The data plane over real loopback sockets: what it carries, what it refuses, and where a message goes when it cannot.</summary>
public sealed class DataPlaneTests : IAsyncDisposable
{
    private const long Limit = 4 << 20;
    private readonly List<DataPlane> planes = [];
    private readonly ConcurrentQueue<string> warnings = new();

    private (DataPlane Plane, BlockingCollection<object> Delivered, BlockingCollection<object> FellBack) Start()
    {
        var delivered = new BlockingCollection<object>();
        var fellBack = new BlockingCollection<object>();
        var plane = DataPlane.Start("127.0.0.1", 0, "127.0.0.1", Limit, delivered.Add, fellBack.Add, warnings.Enqueue);
        planes.Add(plane);
        return (plane, delivered, fellBack);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var p in planes) await p.DisposeAsync();
    }

    private static TensorPayload Floats(int seed, params long[] shape)
    {
        var n = shape.Aggregate(1L, (a, b) => a * b);
        var data = new byte[n * 4];
        new Random(seed).NextBytes(data);
        return new TensorPayload(shape, WireDType.Float32, data);
    }

    private static object Take(BlockingCollection<object> c) =>
        c.TryTake(out var m, TimeSpan.FromSeconds(10)) ? m : throw new TimeoutException("nothing arrived within 10 s");

    [Fact]
    public void Batches_and_gradient_chunks_arrive_intact_and_in_order()
    {
        var (a, _, _) = Start();
        var (b, delivered, _) = Start();
        var sent = new List<IEntityMessage>();
        for (var i = 1; i <= 20; i++)
        {
            // half-megabyte batches, as a DAFL quick batch, and gradient chunks between them
            sent.Add(new LabelledBatch("r/student/0", i, Floats(i, 128, 1, 32, 32), Floats(100 + i, 128, 10), 20));
            sent.Add(new GradientChunk("r/student/1", i, 0, 0, 1, 0, Floats(200 + i, 1000)));
        }
        foreach (var m in sent) a.Send(b.Endpoint, m);
        foreach (var m in sent)
        {
            var got = Take(delivered);
            Assert.Equal(m.GetType(), got.GetType());
            switch (m, got)
            {
                case (LabelledBatch x, LabelledBatch y):
                    Assert.Equal((x.EntityId, x.Seq, x.Temperature), (y.EntityId, y.Seq, y.Temperature));
                    Assert.Equal(x.Images.Shape, y.Images.Shape);
                    Assert.Equal(x.Images.Data, y.Images.Data);
                    Assert.Equal(x.SoftLabels!.Data, y.SoftLabels!.Data);
                    break;
                case (GradientChunk x, GradientChunk y):
                    Assert.Equal((x.EntityId, x.Step, x.FromReplica, x.Offset), (y.EntityId, y.Step, y.FromReplica, y.Offset));
                    Assert.Equal(x.Values.Data, y.Values.Data);
                    break;
            }
        }
        Assert.Equal(40, b.Received);
        // the sender counts a message once its write returns, which may be after the peer read it
        Assert.True(SpinWait.SpinUntil(() => a.Sent == 40, TimeSpan.FromSeconds(5)), $"sender counted {a.Sent} of 40");
        Assert.Equal(0, a.FellBack);
    }

    [Fact]
    public void A_message_for_this_node_is_delivered_without_a_socket()
    {
        var (a, delivered, _) = Start();
        var m = new GradientChunk("r/student/0", 1, 1, 0, 1, 0, Floats(1, 10));
        a.Send(a.Endpoint, m);
        Assert.Same(m, Take(delivered));
        Assert.Equal(0, a.Sent);
    }

    [Fact]
    public void An_unreachable_endpoint_sends_through_the_fallback_and_says_why()
    {
        var (a, _, fellBack) = Start();
        // a port nobody listens on: bind one, note it, release it
        var probe = new TcpListener(System.Net.IPAddress.Loopback, 0);
        probe.Start();
        var dead = $"127.0.0.1:{((System.Net.IPEndPoint)probe.LocalEndpoint).Port}";
        probe.Stop();
        var m = new LabelledBatch("r/student/0", 7, Floats(1, 2, 1, 4, 4), Floats(2, 2, 10), 1);
        a.Send(dead, m);
        Assert.Same(m, Take(fellBack));
        Assert.Equal(1, a.FellBack);
        Assert.Contains(warnings, w => w.Contains($"cannot reach {dead}"));
    }

    [Fact]
    public void A_gradient_goes_out_from_its_own_array_and_arrives_as_chunks_with_its_values()
    {
        var (a, _, fellBackA) = Start();
        var (b, delivered, _) = Start();
        var gradient = Enumerable.Range(0, 2500).Select(i => i * 0.25f - 7f).ToArray();
        var slices = GradientSlice.Of("r/student/1", 9, 0, gradient, chunk: 1000).ToList();
        Assert.Equal([(0, 1000), (1000, 1000), (2000, 500)], slices.Select(x => (x.Offset, x.Count)));
        foreach (var x in slices) a.Send(b.Endpoint, x);
        var got = slices.Select(_ => (GradientChunk)Take(delivered)).ToList();
        Assert.Equal([0, 1, 2], got.Select(c => c.ChunkIndex));
        Assert.All(got, c => Assert.Equal(("r/student/1", 9L, 0, 3), (c.EntityId, c.Step, c.FromReplica, c.ChunkCount)));
        Assert.Equal(gradient, got.SelectMany(c => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(c.Values.Data).ToArray()));
        Assert.Equal([1000L, 1000, 500], got.Select(c => c.Values.Shape[0]));

        // to this node, and where the plane cannot write, a slice becomes a message of its own: a copy
        var (self, toSelf, _) = Start();
        self.Send(self.Endpoint, slices[2]);
        var local = (GradientChunk)Take(toSelf);
        var probe = new TcpListener(System.Net.IPAddress.Loopback, 0);
        probe.Start();
        var dead = $"127.0.0.1:{((System.Net.IPEndPoint)probe.LocalEndpoint).Port}";
        probe.Stop();
        a.Send(dead, slices[1]);
        var viaAkka = (GradientChunk)Take(fellBackA);
        gradient[2000] = 99f;
        gradient[1000] = 99f;
        Assert.Equal(-7f + 2000 * 0.25f, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(local.Values.Data)[0]);
        Assert.Equal(-7f + 1000 * 0.25f, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(viaAkka.Values.Data)[0]);
        Assert.Equal((1, 1000L), (viaAkka.ChunkIndex, viaAkka.Offset));
    }

    [Fact]
    public void A_message_whose_header_and_bulk_exceed_the_limit_is_not_sent_and_the_warning_names_the_whole_size()
    {
        var (a, _, _) = Start();
        var (b, delivered, _) = Start();
        // 4 MiB of images (the limit) plus a header: over the limit only with the bulk counted
        var big = new LabelledBatch("r/student/0", 1, Floats(1, 1024, 1, 32, 32), Floats(2, 1024, 10), 1);
        a.Send(b.Endpoint, big);
        Assert.True(SpinWait.SpinUntil(() => warnings.Any(w => w.Contains("not sent")), TimeSpan.FromSeconds(10)), "no warning");
        var w = warnings.First(x => x.Contains("not sent"));
        Assert.Contains("LabelledBatch is 4,2", w);
        Assert.Contains($"over the {Limit:N0}-byte message limit", w);
        // the connection is still good for the next message
        a.Send(b.Endpoint, new GradientChunk("r/student/0", 1, 1, 0, 1, 0, Floats(3, 10)));
        Assert.IsType<GradientChunk>(Take(delivered));
        Assert.Equal(0, a.FellBack);
    }

    [Fact]
    public void A_port_already_taken_is_refused_with_the_address()
    {
        var (a, _, _) = Start();
        var port = int.Parse(a.Endpoint[(a.Endpoint.LastIndexOf(':') + 1)..]);
        var e = Assert.Throws<InvalidOperationException>(() => DataPlane.Start("127.0.0.1", port, "127.0.0.1", Limit, _ => { }, _ => { }, _ => { }));
        Assert.Contains($"cannot listen on 127.0.0.1:{port}", e.Message);
    }

    [Fact]
    public void Only_bulk_contracts_are_sent()
    {
        var (a, _, _) = Start();
        Assert.Throws<ArgumentException>(() => a.Send("127.0.0.1:1", new RequestBatches("r/generator/0", 1, 1, "r/student/0")));
    }

    private static async Task<byte[]> SendRaw(DataPlane to, byte[] bytes)
    {
        using var client = new TcpClient();
        var i = to.Endpoint.LastIndexOf(':');
        await client.ConnectAsync(to.Endpoint[..i], int.Parse(to.Endpoint[(i + 1)..]));
        var stream = client.GetStream();
        await stream.WriteAsync(bytes);
        // the receiver closes the connection on a refused frame: reading sees the end
        var rest = new byte[16];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            var n = await stream.ReadAsync(rest, cts.Token);
            return rest[..n];
        }
        catch (IOException)
        {
            return [];   // closed with our bytes unread: a reset rather than an orderly end
        }
    }

    private static byte[] RawFrame(string manifest, byte[] body, int? declared = null, byte[]? bulk = null, int? declaredBulk = null)
    {
        var m = Encoding.ASCII.GetBytes(manifest);
        bulk ??= [];
        var frame = new byte[DataPlane.Hello.Length + 1 + m.Length + 4 + body.Length + 4 + bulk.Length];
        DataPlane.Hello.CopyTo(frame, 0);
        var at = DataPlane.Hello.Length;
        frame[at++] = (byte)m.Length;
        m.CopyTo(frame, at);
        at += m.Length;
        BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(at), declared ?? body.Length);
        body.CopyTo(frame, at + 4);
        at += 4 + body.Length;
        BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(at), declaredBulk ?? bulk.Length);
        bulk.CopyTo(frame, at + 4);
        return frame;
    }

    [Fact]
    public async Task Malformed_frames_are_refused_with_the_reason_and_the_connection_closed()
    {
        var (b, delivered, _) = Start();
        // not the protocol at all
        Assert.Empty(await SendRaw(b, "GET / HTTP/1.1\r\n\r\n"u8.ToArray()));
        // a manifest outside the contract table
        Assert.Empty(await SendRaw(b, RawFrame("Z9", [0x90])));
        // a wire contract that does not travel here (a request, not bulk data)
        var request = new ArrayBufferWriter<byte>();
        ContractCodec.Serialize(request, new RequestBatches("r/generator/0", 1, 1, "r/student/0"));
        Assert.Empty(await SendRaw(b, RawFrame("P2", request.WrittenSpan.ToArray())));
        // a body larger than the limit, declared before it is sent
        Assert.Empty(await SendRaw(b, RawFrame("P5", [0x90], declared: (int)Limit + 1)));
        // bytes that do not decode as the named contract
        Assert.Empty(await SendRaw(b, RawFrame("P5", [0xc1, 0xc1, 0xc1])));
        // a batch whose tensor bytes disagree with its shape
        var lying = new ArrayBufferWriter<byte>();
        ContractCodec.Serialize(lying,
            new LabelledBatch("r/student/0", 1, new TensorPayload([128, 1, 32, 32], WireDType.Float32, new byte[16]), Floats(1, 2, 10), 1));
        Assert.Empty(await SendRaw(b, RawFrame("P5", lying.WrittenSpan.ToArray())));
        // the same lie told in the bulk bytes that follow the header
        var header = new ArrayBufferWriter<byte>();
        ContractCodec.Serialize(header,
            new LabelledBatch("r/student/0", 1, new TensorPayload([128, 1, 32, 32], WireDType.Float32, []), Floats(1, 2, 10), 1));
        Assert.Empty(await SendRaw(b, RawFrame("P5", header.WrittenSpan.ToArray(), bulk: new byte[16])));
        // bulk bytes that would take the frame over the limit, declared before they are sent
        Assert.Empty(await SendRaw(b, RawFrame("G1", header.WrittenSpan.ToArray(), declaredBulk: (int)Limit)));

        Assert.Equal(8, b.Refused);
        Assert.Equal(0, b.Received);
        Assert.Empty(delivered);
        var w = warnings.ToList();
        Assert.Contains(w, x => x.Contains("does not speak the data plane protocol"));
        Assert.Contains(w, x => x.Contains("'Z9'") && x.Contains("unknown manifest"));
        Assert.Contains(w, x => x.Contains("RequestBatches, which does not travel on the data plane"));
        Assert.Contains(w, x => x.Contains($"declares {Limit + 1:N0} bytes"));
        Assert.Contains(w, x => x.Contains("malformed 'P5'"));
        Assert.Equal(2, w.Count(x => x.Contains("LabelledBatch refused") && x.Contains("needs 524288 bytes, got 16")));
        Assert.Contains(w, x => x.Contains($"bulk bytes after") && x.Contains($"limit {Limit:N0} in all"));

        // and the plane still works for a well-formed peer
        var (a, _, _) = Start();
        a.Send(b.Endpoint, new GradientChunk("r/student/0", 1, 1, 0, 1, 0, Floats(1, 10)));
        Assert.IsType<GradientChunk>(Take(delivered));
    }

    private static async Task<TcpClient> Open(DataPlane to, byte[] first)
    {
        var client = new TcpClient();
        var i = to.Endpoint.LastIndexOf(':');
        await client.ConnectAsync(to.Endpoint[..i], int.Parse(to.Endpoint[(i + 1)..]));
        if (first.Length > 0) await client.GetStream().WriteAsync(first);
        return client;
    }

    /// <summary>Seconds until the other end closes the connection (reading sees the end or a reset); null: still open after `within`.</summary>
    private static async Task<double?> SecondsUntilClosed(TcpClient client, TimeSpan within)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var cts = new CancellationTokenSource(within);
        try
        {
            var buffer = new byte[16];
            while (await client.GetStream().ReadAsync(buffer, cts.Token) > 0) { }
        }
        catch (OperationCanceledException) { return null; }
        catch (IOException) { }
        return clock.Elapsed.TotalSeconds;
    }

    /// <summary>A frame's start: hello, manifest, a declared body length, and `sent` bytes of the body.</summary>
    private static byte[] FrameStart(string manifest, int declared, int sent)
    {
        var frame = RawFrame(manifest, new byte[sent], declared: declared);
        return frame[..^4];   // no bulk length: the body is not finished
    }

    [Fact]
    public async Task A_silent_connection_a_partial_frame_and_an_idle_connection_are_closed_after_their_timeouts()
    {
        var plane = DataPlane.Start("127.0.0.1", 0, "127.0.0.1", Limit, _ => { }, _ => { }, warnings.Enqueue, null,
            new DataPlane.Limits(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(1), 16));
        planes.Add(plane);
        using var silent = await Open(plane, []);
        using var partial = await Open(plane, FrameStart("P5", (int)Limit - 1, 100));
        using var idle = await Open(plane, DataPlane.Hello);
        var closed = await Task.WhenAll(SecondsUntilClosed(silent, TimeSpan.FromSeconds(15)), SecondsUntilClosed(partial, TimeSpan.FromSeconds(15)),
            SecondsUntilClosed(idle, TimeSpan.FromSeconds(15)));
        Assert.All(closed, c => Assert.NotNull(c));
        Assert.InRange(closed[0]!.Value, 0.5, 8);
        Assert.InRange(closed[1]!.Value, 0.5, 8);
        Assert.InRange(closed[2]!.Value, 1.5, 10);
        Assert.Equal(3, plane.Refused);
        var w = warnings.ToList();
        Assert.Contains(w, x => x.Contains("did not send its hello within 1 s"));
        Assert.Contains(w, x => x.Contains("did not send the rest of a frame within 1 s"));
        Assert.Contains(w, x => x.Contains("did not send a frame within 2 s of the last"));
    }

    [Fact]
    public async Task A_declared_length_is_not_held_before_its_bytes_arrive_and_connections_from_one_address_are_capped()
    {
        const long big = 64 << 20;
        var delivered = new BlockingCollection<object>();
        var plane = DataPlane.Start("127.0.0.1", 0, "127.0.0.1", big, delivered.Add, _ => { }, warnings.Enqueue, null,
            DataPlane.Limits.Default with { MaxConnectionsPerAddress = 16 });
        planes.Add(plane);
        // sixteen peers each declare a 60 MiB body and send 1 KB of it: the plane holds what arrived, not what was declared
        var before = GC.GetTotalAllocatedBytes(precise: true);
        var claims = new List<TcpClient>();
        for (var i = 0; i < 16; i++) claims.Add(await Open(plane, FrameStart("P5", 60 << 20, 1024)));
        await Task.Delay(800);
        var allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Assert.True(allocated < 200L << 20, $"{allocated:N0} bytes allocated for 16 connections that sent 16 KB (they declared 960 MiB)");
        // a seventeenth from the same address is refused at once
        using (var extra = await Open(plane, DataPlane.Hello))
            Assert.NotNull(await SecondsUntilClosed(extra, TimeSpan.FromSeconds(10)));
        Assert.Contains(warnings, x => x.Contains("127.0.0.1 has 16 connections open already"));
        Assert.Equal(1, plane.Refused);
        // once they close, a well-formed peer gets in and delivers a bulk larger than the first read, intact
        foreach (var c in claims) c.Dispose();
        var (a, _, _) = Start();
        var chunk = new GradientChunk("r/student/0", 1, 1, 0, 1, 0, Floats(7, 3 << 18));
        await Task.Delay(300);
        a.Send(plane.Endpoint, chunk);
        var got = Assert.IsType<GradientChunk>(Take(delivered));
        Assert.Equal(chunk.Values.Data, got.Values.Data);
    }
}
