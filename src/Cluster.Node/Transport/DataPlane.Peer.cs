using System.Buffers;
using System.Net.Security;
using System.Net.Sockets;
using System.Threading.Channels;
using Cluster.Contracts.Serialization;

namespace Cluster.Node.Transport;

// The sending side: one connection per peer endpoint, its queue and its writer.
public sealed partial class DataPlane
{
    /// <summary>One outgoing connection, opened on first use and again after an error.</summary>
    private sealed class Peer
    {
        private readonly DataPlane owner;
        private readonly string endpoint;
        /// <summary>When a message was last queued (Environment.TickCount64): idle peers are closed.</summary>
        public long LastUsed;
        public Channel<object> Queue { get; } = Channel.CreateBounded<object>(new BoundedChannelOptions(QueueLimit) { SingleReader = true });

        public Peer(DataPlane owner, string endpoint)
        {
            this.owner = owner;
            this.endpoint = endpoint;
            _ = Task.Run(WriteLoop);
        }

        private async Task WriteLoop()
        {
            var buffer = new ArrayBufferWriter<byte>(1 << 20);
            var token = owner.stop.Token;
            TcpClient? client = null;
            Stream? stream = null;
            var downUntil = DateTime.MinValue;
            try
            {
                while (await Queue.Reader.WaitToReadAsync(token))
                {
                    while (Queue.Reader.TryRead(out var message))
                    {
                        if (stream is null)
                        {
                            if (DateTime.UtcNow < downUntil) { owner.FallBack(message); continue; }
                            try { (client, stream) = await Connect(token); }
                            catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or System.Security.Authentication.AuthenticationException && !token.IsCancellationRequested)
                            {
                                // the peer may be gone (its node died): Akka and sharding take over for a while
                                owner.warn($"data plane: cannot reach {endpoint} ({e.Message}); sending through Akka for 2 s");
                                downUntil = DateTime.UtcNow.AddSeconds(2);
                                owner.FallBack(message);
                                continue;
                            }
                        }
                        try
                        {
                            buffer.ResetWrittenCount();
                            var bulk = Frame(buffer, message, owner.maxBytes);
                            await stream.WriteAsync(buffer.WrittenMemory, token);
                            if (bulk.Length > 0) await stream.WriteAsync(bulk, token);
                            Interlocked.Increment(ref owner.sent);
                        }
                        catch (WireException e)
                        {
                            owner.warn($"data plane: {e.Message}; not sent");
                        }
                        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException && !token.IsCancellationRequested)
                        {
                            owner.warn($"data plane: writing to {endpoint} failed ({e.Message}); sending through Akka");
                            owner.FallBack(message);
                            stream.Dispose();
                            client?.Dispose();
                            (client, stream) = (null, null);
                        }
                    }
                }
            }
            catch (OperationCanceledException) { }
            finally
            {
                stream?.Dispose();
                client?.Dispose();
            }
        }

        private async Task<(TcpClient, Stream)> Connect(CancellationToken token)
        {
            var i = endpoint.LastIndexOf(':');
            if (i <= 0 || !int.TryParse(endpoint[(i + 1)..], out var port)) throw new IOException($"'{endpoint}' is not host:port");
            var client = new TcpClient { NoDelay = true, SendBufferSize = 4 << 20 };
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
                timeout.CancelAfter(TimeSpan.FromSeconds(5));
                await client.ConnectAsync(endpoint[..i], port, timeout.Token);
                Stream stream = client.GetStream();
                if (owner.tls is { } tls)
                {
                    var secure = new SslStream(stream, leaveInnerStreamOpen: false);
                    stream = secure;
                    await secure.AuthenticateAsClientAsync(tls.ClientOptions(endpoint[..i]), timeout.Token);
                }
                await stream.WriteAsync(Hello, token);
                return (client, stream);
            }
            catch
            {
                client.Dispose();
                throw;
            }
        }
    }
}
