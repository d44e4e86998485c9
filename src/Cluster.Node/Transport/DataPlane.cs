using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Channels;
using Cluster.Contracts;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Serialization;
using Cluster.Contracts.Students;
using Cluster.Node.Security;

namespace Cluster.Node.Transport;

/// <summary>
/// Bulk messages between nodes over plain TCP, beside Akka.Remote: labelled batches and gradient
/// chunks. Akka.Remote moves half-megabyte messages at ~60 MB/s on loopback (2% of a socket, its
/// framing and copies; docs/benchmarks.md); this moves the same contracts, encoded by the same
/// codec, at socket speed. Akka still carries everything else, and addresses: a sender learns a
/// peer's endpoint from a message (RequestBatches, ReplicaAt) and sends there. The receiving node
/// hands each message to its local shard region, which forwards it if the entity has moved, so a
/// stale endpoint costs a hop, not a message. A message that cannot be written (no connection,
/// queue full, socket error) goes through Akka instead; the protocols drop duplicates, so one that
/// was written and also sent again does no harm.
/// Frames: a connection opens with <see cref="Hello"/>, then per message one byte of manifest
/// length, the manifest, four bytes of body length (little-endian), the MessagePack body, four
/// bytes of bulk length and the bulk bytes. The bulk is the message's large byte payload (a
/// gradient chunk's values, a batch's images; <see cref="ContractCodec.DetachBulk"/>), written from
/// and read into its own array: a megabyte chunk is not copied into and out of a frame buffer. Only
/// the manifests of <see cref="Carried"/> are accepted, within the message limit (body and bulk
/// together); anything else closes the connection with the reason logged.
/// With TLS (<see cref="NodeTls"/>) each connection is a mutually authenticated TLS session first:
/// a peer whose certificate does not chain to the cluster's authority is refused in the handshake,
/// before a byte of the protocol is read.
/// </summary>
public sealed partial class DataPlane : IAsyncDisposable
{
    public static readonly byte[] Hello = "CDDATA02"u8.ToArray();

    /// <summary>
    /// What an incoming connection may hold, and for how long. A frame's declared length is a
    /// claim, not bytes: a reader holds at most <see cref="InitialRead"/> plus twice what arrived.
    /// </summary>
    /// <param name="HelloTimeout">From accepting a connection to its hello.</param>
    /// <param name="IdleTimeout">Between frames; well above the writers' 60 s before they close an idle peer, so a writer closes first.</param>
    /// <param name="FrameTimeout">From a frame's first byte to its last (16 MiB in 60 s is 280 KB/s).</param>
    /// <param name="MaxConnectionsPerAddress">Incoming connections open at once from one IP address (a node opens one to each peer).</param>
    public sealed record Limits(TimeSpan HelloTimeout, TimeSpan IdleTimeout, TimeSpan FrameTimeout, int MaxConnectionsPerAddress)
    {
        public static readonly Limits Default = new(TimeSpan.FromSeconds(10), TimeSpan.FromMinutes(5), TimeSpan.FromSeconds(60), 16);
    }

    /// <summary>Bytes a reader takes for a frame before more of it arrives: a gradient chunk or a batch of up to a megabyte is read straight into its own array.</summary>
    public const int InitialRead = 1 << 20;

    /// <summary>The only contracts this channel delivers.</summary>
    private static readonly HashSet<Type> Carried = [typeof(LabelledBatch), typeof(GradientChunk)];

    /// <summary>Messages queued per peer before the rest go through Akka.</summary>
    private const int QueueLimit = 256;

    private readonly TcpListener listener;
    private readonly long maxBytes;
    private readonly Action<object> deliver;
    private readonly Action<object> fallback;
    private readonly Action<string> warn;
    private readonly Action<string> info;
    private readonly Task statsLoop;
    private readonly ConcurrentDictionary<string, Peer> peers = new();
    private readonly CancellationTokenSource stop = new();
    private readonly List<Task> readers = [];
    private readonly Task acceptLoop;
    private readonly Limits limits;
    private readonly NodeTls? tls;
    private readonly ConcurrentDictionary<IPAddress, int> openFrom = new();
    private readonly Throttle refusals = new(TimeSpan.FromSeconds(10), burst: 10);
    private long sent, received, fellBack, refused;

    private DataPlane(TcpListener listener, string endpoint, long maxBytes, Limits limits, NodeTls? tls, Action<object> deliver, Action<object> fallback, Action<string> warn, Action<string> info)
    {
        this.limits = limits;
        this.tls = tls;
        this.info = info;
        this.listener = listener;
        this.maxBytes = maxBytes;
        this.deliver = deliver;
        this.fallback = fallback;
        this.warn = warn;
        Endpoint = endpoint;
        acceptLoop = Task.Run(AcceptLoop);
        statsLoop = Task.Run(StatsLoop);
    }

    /// <summary>Peers unused for this long are closed (nodes come and go: a restarted node has a new port).</summary>
    private static readonly TimeSpan IdlePeer = TimeSpan.FromSeconds(60);

    private void EvictIdlePeers()
    {
        var now = Environment.TickCount64;
        foreach (var (endpoint, peer) in peers)
        {
            if (now - Interlocked.Read(ref peer.LastUsed) < IdlePeer.TotalMilliseconds || peer.Queue.Reader.Count > 0) continue;
            // a Send racing with this finds the queue closed and goes through Akka
            if (peers.TryRemove(new KeyValuePair<string, Peer>(endpoint, peer))) peer.Queue.Writer.TryComplete();
        }
    }

    /// <summary>What moved, every 5 s while something does (operators see the plane carry the load, or fall back).</summary>
    private async Task StatsLoop()
    {
        (long, long, long, long) last = default;
        try
        {
            while (true)
            {
                await Task.Delay(TimeSpan.FromSeconds(5), stop.Token);
                EvictIdlePeers();
                var now = (Sent, Received, FellBack, Refused);
                if (now == last) continue;
                last = now;
                info($"data plane {Endpoint}: sent {now.Item1}, received {now.Item2} messages; {now.Item3} went through Akka instead, {now.Item4} connections refused");
            }
        }
        catch (OperationCanceledException) { }
    }

    /// <summary>host:port that peers connect to.</summary>
    public string Endpoint { get; }

    public long Sent => Interlocked.Read(ref sent);
    public long Received => Interlocked.Read(ref received);
    /// <summary>Messages that went through Akka because this channel could not take them.</summary>
    public long FellBack => Interlocked.Read(ref fellBack);
    /// <summary>Connections closed over a frame that was not a carried contract, a peer too slow or silent, or one too many from an address.</summary>
    public long Refused => Interlocked.Read(ref refused);

    /// <param name="bindHost">Address to listen on.</param>
    /// <param name="port">0: any free port.</param>
    /// <param name="advertisedHost">The host peers reach this node at (Akka's public hostname).</param>
    /// <param name="deliver">Hands a received message to this node's shard region.</param>
    /// <param name="fallback">Sends a message this channel could not write through Akka.</param>
    /// <param name="info">Periodic counts (every 5 s while they change).</param>
    /// <param name="limits">What an incoming connection may hold and for how long (null: <see cref="Limits.Default"/>).</param>
    /// <param name="tls">Mutually authenticated TLS on every connection (null: plain TCP)</param>
    public static DataPlane Start(string bindHost, int port, string advertisedHost, long maxBytes,
        Action<object> deliver, Action<object> fallback, Action<string> warn, Action<string>? info = null, Limits? limits = null, NodeTls? tls = null)
    {
        TcpListener listener;
        try
        {
            var address = bindHost is "0.0.0.0" or "" ? IPAddress.Any
                : Dns.GetHostAddresses(bindHost).FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork)
                  ?? throw new InvalidOperationException($"data plane: {bindHost} has no IPv4 address to listen on");
            listener = new TcpListener(address, port);
            listener.Start();
        }
        catch (SocketException e) { throw new InvalidOperationException($"data plane: cannot listen on {bindHost}:{port}: {e.Message}", e); }
        var bound = ((IPEndPoint)listener.LocalEndpoint).Port;
        return new DataPlane(listener, $"{advertisedHost}:{bound}", maxBytes, limits ?? Limits.Default, tls, deliver, fallback, warn, info ?? (_ => { }));
    }

    /// <summary>
    /// Sends a carried message to the node at endpoint (delivered here directly if that is this
    /// node). Never blocks: the bytes are encoded and written by the peer's own task.
    /// </summary>
    public void Send(string endpoint, IEntityMessage message)
    {
        if (!Carried.Contains(message.GetType())) throw new ArgumentException($"{message.GetType().Name} does not travel on the data plane");
        Enqueue(endpoint, message);
    }

    /// <summary>A gradient chunk written from the replica's gradient itself (<see cref="GradientSlice"/>).</summary>
    public void Send(string endpoint, GradientSlice slice) => Enqueue(endpoint, slice);

    private void Enqueue(string endpoint, object item)
    {
        if (endpoint == Endpoint) { deliver(AsMessage(item)); return; }
        var peer = peers.GetOrAdd(endpoint, e => new Peer(this, e));
        peer.LastUsed = Environment.TickCount64;
        if (!peer.Queue.Writer.TryWrite(item)) FallBack(item);
    }

    /// <summary>What a queued item is as a message of its own (a slice copied out of its gradient).</summary>
    private static object AsMessage(object item) => item is GradientSlice s ? s.ToChunk() : item;

    private void FallBack(object item)
    {
        Interlocked.Increment(ref fellBack);
        fallback(AsMessage(item));
    }

    /// <summary>Appends one frame up to the bulk bytes (manifest length, manifest, body length, body, bulk length); returns the bulk, which follows.</summary>
    public static ReadOnlyMemory<byte> Frame(ArrayBufferWriter<byte> buffer, object item, long maxBytes)
    {
        object header;
        ReadOnlyMemory<byte> bulk;
        if (item is GradientSlice s) (header, bulk) = (s.Header, s.Bytes);
        else (header, bulk) = ContractCodec.DetachBulk(item);
        var manifest = Encoding.ASCII.GetBytes(ContractCodec.Manifest(header));
        buffer.GetSpan(1)[0] = (byte)manifest.Length;
        buffer.Advance(1);
        buffer.Write(manifest);
        var lengthAt = buffer.WrittenCount;
        buffer.GetSpan(4);
        buffer.Advance(4);
        var body = ContractCodec.Serialize(buffer, header, maxBytes, bulk.Length);
        // the length goes in front of the body just written
        BinaryPrimitives.WriteInt32LittleEndian(MemoryMarshal.AsMemory(buffer.WrittenMemory).Span.Slice(lengthAt, 4), body);
        BinaryPrimitives.WriteInt32LittleEndian(buffer.GetSpan(4), bulk.Length);
        buffer.Advance(4);
        return bulk;
    }

    private async Task AcceptLoop()
    {
        while (!stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await listener.AcceptTcpClientAsync(stop.Token); }
            catch (Exception) when (stop.IsCancellationRequested) { return; }
            catch (SocketException e) { warn($"data plane: accept failed ({e.Message})"); continue; }
            var address = (client.Client.RemoteEndPoint as IPEndPoint)?.Address ?? IPAddress.None;
            if (openFrom.AddOrUpdate(address, 1, (_, n) => n + 1) > limits.MaxConnectionsPerAddress)
            {
                Release(address);
                // counted and logged before the peer sees the end, as a refused frame is
                Refuse($"{address} has {limits.MaxConnectionsPerAddress} connections open already; another refused");
                client.Dispose();
                continue;
            }
            client.NoDelay = true;
            client.ReceiveBufferSize = 4 << 20;
            lock (readers)
            {
                readers.RemoveAll(t => t.IsCompleted);
                readers.Add(Task.Run(() => ReadLoop(client, address)));
            }
        }
    }

    private void Release(IPAddress address)
    {
        if (openFrom.AddOrUpdate(address, 0, (_, n) => n - 1) <= 0) openFrom.TryRemove(new KeyValuePair<IPAddress, int>(address, 0));
    }

    /// <summary>Counts a refused connection and says why, ten times per 10 s at most (a flood of them costs a few lines, with a count).</summary>
    private void Refuse(string reason)
    {
        Interlocked.Increment(ref refused);
        if (refusals.Allow(out var suppressed))
            warn($"data plane: {reason}; connection closed" + (suppressed > 0 ? $" ({suppressed} more refused before this, unlogged)" : ""));
    }

    private async Task ReadLoop(TcpClient client, IPAddress address)
    {
        var from = client.Client.RemoteEndPoint?.ToString() ?? "?";
        byte[] body = ArrayPool<byte>.Shared.Rent(InitialRead);
        var header = new byte[Math.Max(Hello.Length, 4)];
        // one timer for the phase the connection is in: hello, idle between frames, within a frame
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stop.Token);
        var token = deadline.Token;
        var phase = "its hello";
        void Expect(string what, TimeSpan within) { phase = what; deadline.CancelAfter(within); }
        Stream? stream = null;
        try
        {
            stream = client.GetStream();
            Expect($"its hello within {limits.HelloTimeout.TotalSeconds:0} s", limits.HelloTimeout);
            if (tls is not null)
            {
                var secure = new SslStream(stream, leaveInnerStreamOpen: false);
                stream = secure;
                try { await secure.AuthenticateAsServerAsync(tls.ServerOptions(), token); }
                catch (Exception e) when (e is not OperationCanceledException && !stop.IsCancellationRequested)
                {
                    throw new WireException($"connection from {from} did not authenticate ({e.GetType().Name}: {e.Message})");
                }
            }
            await stream.ReadExactlyAsync(header.AsMemory(0, Hello.Length), token);
            if (!header.AsSpan(0, Hello.Length).SequenceEqual(Hello))
                throw new WireException($"connection from {from} does not speak the data plane protocol (first bytes {Convert.ToHexString(header, 0, Hello.Length)})");
            while (true)
            {
                Expect($"a frame within {limits.IdleTimeout.TotalSeconds:0} s of the last", limits.IdleTimeout);
                if (await stream.ReadAsync(header.AsMemory(0, 1), token) == 0) return;   // the peer closed between frames
                Expect($"the rest of a frame within {limits.FrameTimeout.TotalSeconds:0} s", limits.FrameTimeout);
                var n = header[0];
                if (n is 0 or > 16) throw new WireException($"frame from {from} has a manifest of {n} bytes (at most 16)");
                var manifestBytes = new byte[n];
                await stream.ReadExactlyAsync(manifestBytes, token);
                var manifest = Encoding.ASCII.GetString(manifestBytes);
                var type = ContractCodec.ContractType(manifest);
                if (type is null || !Carried.Contains(type))
                    throw new WireException($"frame '{manifest}' from {from} is " +
                                            (type is null ? "an unknown manifest: not a ClusterDistill contract" : $"a {type.Name}, which does not travel on the data plane"));
                await stream.ReadExactlyAsync(header.AsMemory(0, 4), token);
                var length = BinaryPrimitives.ReadInt32LittleEndian(header);
                if (length <= 0 || length > maxBytes)
                    throw new WireException($"frame '{manifest}' from {from} declares {length:N0} bytes (limit {maxBytes:N0})");
                // a body over the first read is rare (the bulk travels apart): grown as it arrives, and not pooled
                var frameBody = length <= body.Length ? body : null;
                if (frameBody is not null) await stream.ReadExactlyAsync(frameBody.AsMemory(0, length), token);
                else frameBody = await ReadGrowing(stream, length, body.AsMemory(), n => GC.AllocateUninitializedArray<byte>(n), token);
                await stream.ReadExactlyAsync(header.AsMemory(0, 4), token);
                var bulkLength = BinaryPrimitives.ReadInt32LittleEndian(header);
                if (bulkLength < 0 || (long)length + bulkLength > maxBytes)
                    throw new WireException($"frame '{manifest}' from {from} declares {bulkLength:N0} bulk bytes after {length:N0} (limit {maxBytes:N0} in all)");
                byte[]? bulk = null;
                if (bulkLength > 0)
                {
                    // the message keeps the array (GradientExchange returns a chunk's to the pool): exactly its length
                    if (bulkLength <= InitialRead)
                    {
                        bulk = ExactPool<byte>.Shared.Rent(bulkLength);
                        await stream.ReadExactlyAsync(bulk, token);
                    }
                    else bulk = await ReadGrowing(stream, bulkLength, Memory<byte>.Empty, ExactPool<byte>.Shared.Rent, token);
                }
                var message = ContractCodec.Deserialize(frameBody.AsMemory(0, length), manifest, maxBytes, bulk);
                Interlocked.Increment(ref received);
                deliver(message);
            }
        }
        catch (WireException e)
        {
            Refuse(e.Message);
        }
        catch (OperationCanceledException) when (!stop.IsCancellationRequested)
        {
            Refuse($"connection from {from} did not send {phase}");
        }
        catch (Exception e) when (e is IOException or SocketException or EndOfStreamException or OperationCanceledException or ObjectDisposedException)
        {
            // the peer went away mid-frame, or we are stopping
        }
        finally
        {
            // closed only after the reason is counted and logged: the peer sees the end after that
            stream?.Dispose();
            client.Dispose();
            Release(address);
            ArrayPool<byte>.Shared.Return(body);
        }
    }

    /// <summary>
    /// Reads `length` bytes into an array of exactly that length made by `exact`, holding no more
    /// than twice what has arrived: the bytes go into arrays that double as they fill (starting with
    /// `first`'s room, else <see cref="InitialRead"/>), and the exact array is made only for the last step.
    /// </summary>
    private static async Task<byte[]> ReadGrowing(Stream stream, int length, Memory<byte> first, Func<int, byte[]> exact, CancellationToken token)
    {
        var room = first.Length > 0 ? first : new byte[Math.Min(length, InitialRead)];
        var got = 0;
        while (true)
        {
            var step = Math.Min(room.Length, length) - got;
            await stream.ReadExactlyAsync(room.Slice(got, step), token);
            got += step;
            if (got == length && room.Length == length && MemoryMarshal.TryGetArray<byte>(room, out var whole) && whole.Offset == 0 && whole.Array!.Length == length)
                return whole.Array;
            var next = (long)room.Length * 2 >= length ? exact(length) : new byte[room.Length * 2];
            room[..got].CopyTo(next);
            room = next;
            if (got == length) return next;
        }
    }
    public async ValueTask DisposeAsync()
    {
        await stop.CancelAsync();
        listener.Stop();
        foreach (var p in peers.Values) p.Queue.Writer.TryComplete();
        try { await acceptLoop; } catch (Exception) { }
        try { await statsLoop; } catch (Exception) { }
        Task[] pending;
        lock (readers) pending = [.. readers];
        try { await Task.WhenAll(pending).WaitAsync(TimeSpan.FromSeconds(5)); } catch (Exception) { }
        stop.Dispose();
    }
}
