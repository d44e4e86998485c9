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
    private static double RawTcp(int port, int mb)
    {
        using var client = new TcpClient();
        client.NoDelay = true;
        client.Connect(IPAddress.Loopback, port);
        using var s = client.GetStream();
        var buffer = new byte[512 * 1024];
        new Random(1).NextBytes(buffer);
        var total = (long)mb << 20;
        s.Write(BitConverter.GetBytes(total));
        var sw = Stopwatch.StartNew();
        for (long sent = 0; sent < total; sent += buffer.Length) s.Write(buffer, 0, (int)Math.Min(buffer.Length, total - sent));
        if (s.ReadByte() != 1) throw new IOException("raw TCP peer did not acknowledge");
        return total / 1e6 / sw.Elapsed.TotalSeconds;
    }

    /// <summary>
    /// Batches from this process to the peer's sink with 4 in flight: through Akka.Remote, or over
    /// the data plane with the sink's credits coming back through Akka (as in a run).
    /// </summary>
    private static async Task<double> Wire(ActorSystem system, Peer peer, DataPlane? plane, int mb, TextWriter log)
    {
        var sink = await system.ActorSelection($"akka.tcp://bench-peer@127.0.0.1:{peer.AkkaPort}/user/sink").ResolveOne(TimeSpan.FromSeconds(20));
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
