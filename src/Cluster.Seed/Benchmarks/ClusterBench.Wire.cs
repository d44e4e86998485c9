using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Akka.Actor;
using Akka.Configuration;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Serialization;
using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;
using Cluster.Node.Actors;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Cluster.Node.Transport;
using Distill.Engine.Methods;
using Distill.Engine.Pipeline;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Seed.Benchmarks;

/// <summary>Throughput between two processes: a raw TCP socket, batches over Akka.Remote and over the data plane.</summary>
public static partial class ClusterBench
{
    /// <summary>Raw TCP throughput to the peer in MB/s: `mb` MiB one way in 512 KiB writes.</summary>
    private static double RawTcp(int port, int mb) => ((long)mb << 20) / 1e6 / RawTcpSeconds(port, (long)mb << 20, duplex: false);

    /// <summary>
    /// Seconds to move `bytes` to the peer over a raw socket; duplex: the peer sends as many back at
    /// the same time, and the time is until both sides have all of theirs (a 2-replica exchange with
    /// nothing but the copies through the kernel).
    /// </summary>
    private static double RawTcpSeconds(int port, long bytes, bool duplex)
    {
        using var client = new TcpClient { NoDelay = true, SendBufferSize = 4 << 20, ReceiveBufferSize = 4 << 20 };
        client.Connect(IPAddress.Loopback, port);
        using var s = client.GetStream();
        var buffer = new byte[512 * 1024];
        new Random(1).NextBytes(buffer);
        var header = new byte[9];
        BitConverter.TryWriteBytes(header, bytes);
        header[8] = duplex ? (byte)1 : (byte)0;
        s.Write(header);
        var sw = Stopwatch.StartNew();
        var back = duplex ? Task.Run(() => Drain(s, bytes)) : Task.CompletedTask;
        for (long sent = 0; sent < bytes; sent += buffer.Length) s.Write(buffer, 0, (int)Math.Min(buffer.Length, bytes - sent));
        back.Wait();
        if (s.ReadByte() != 1) throw new IOException("raw TCP peer did not acknowledge");
        return sw.Elapsed.TotalSeconds;
    }

    /// <summary>Reads `bytes` from the stream (the other direction of a duplex transfer).</summary>
    private static void Drain(Stream s, long bytes)
    {
        var buffer = new byte[1 << 20];
        for (long got = 0; got < bytes;)
        {
            var n = s.Read(buffer, 0, (int)Math.Min(buffer.Length, bytes - got));
            if (n == 0) throw new EndOfStreamException("raw TCP peer closed early");
            got += n;
        }
    }

    /// <summary>
    /// Batches from this process to the peer's sink with 4 in flight: through Akka.Remote, or over
    /// the data plane with the sink's credits coming back through Akka (as in a run).
    /// </summary>
    private static async Task<double> Wire(ActorSystem system, Peer peer, DataPlane? plane, int mb, TextWriter log)
    {
        var sink = await system.ActorSelection($"{peer.Akka}/user/sink").ResolveOne(TimeSpan.FromSeconds(20));
        manual_seed(4);
        using var x = randn(Batch, 1, 32, 32);
        using var p = nn.functional.softmax(randn(Batch, 10), 1);
        var images = TensorWire.ToPayload(x);
        var labels = TensorWire.ToPayload(p);
        var batchBytes = images.Data.Length + labels.Data.Length;
        var count = (int)(((long)mb << 20) / batchBytes);
        var done = new TaskCompletionSource<double>();
        Action<LabelledBatch> send = plane is null ? b => sink.Tell(b) : b => plane.Send(peer.DataEndpoint, b);
        var sender = system.ActorOf(Props.Create(() => new WireSender(sink, send, images, labels, count, 4, done)));
        var seconds = await done.Task.WaitAsync(TimeSpan.FromMinutes(5));
        var mbps = (double)count * batchBytes / 1e6 / seconds;
        log.WriteLine($"[bench] {(plane is null ? "Akka.Remote" : "data plane")} batches: {mbps:F0} MB/s ({count} batches of {batchBytes:N0} bytes)");
        await sender.GracefulStop(TimeSpan.FromSeconds(5));
        return mbps;
    }

    /// <summary>Keeps `window` batches in flight; the sink answers each with a RequestBatches credit.</summary>
    private sealed class WireSender : ReceiveActor
    {
        public WireSender(IActorRef sink, Action<LabelledBatch> send, TensorPayload images, TensorPayload labels, int count, int window, TaskCompletionSource<double> done)
        {
            var sw = new Stopwatch();
            long sent = 0, acked = 0;
            void Send() => send(new LabelledBatch("bench/student/0", ++sent, images, labels, 1));
            // the sink learns where credits go (batches over the data plane come without a sender)
            sink.Tell(new GetEntityStatus("bench/student/0"));
            Receive<EntityStatus>(_ =>
            {
                sw.Start();
                for (var i = 0; i < window && sent < count; i++) Send();
            });
            Receive<RequestBatches>(_ =>
            {
                if (++acked == count) { done.TrySetResult(sw.Elapsed.TotalSeconds); return; }
                if (sent < count) Send();
            });
        }
    }

    /// <summary>Answers each batch with a credit: to its sender, or (over the data plane, no sender) to the registered one.</summary>
    private sealed class Sink : ReceiveActor
    {
        public Sink()
        {
            IActorRef credits = ActorRefs.Nobody;
            Receive<GetEntityStatus>(m => { credits = Sender; Sender.Tell(new EntityStatus(m.EntityId, true, 0, 0, 0, 0, "peer", "sink")); });
            Receive<LabelledBatch>(b =>
            {
                var to = CameOverAkka(Sender, Context.System) ? Sender : credits;
                to.Tell(new RequestBatches("bench/generator/0", b.Seq + 1, 1, b.EntityId));
            });
        }
    }
}
