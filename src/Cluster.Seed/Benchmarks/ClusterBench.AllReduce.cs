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

/// <summary>The students' all-reduce (<see cref="GradientExchange"/>) between two processes, against the ring bound.</summary>
public static partial class ClusterBench
{
    private static long reduceStep;

    /// <summary>
    /// A 2-replica all-reduce's times, with the references measured between its repetitions (this
    /// VM's speed drifts by tens of percent over minutes): the link's bandwidth, and the same bytes
    /// over a raw socket one way and both ways at once.
    /// </summary>
    private sealed record AllReduceTimes(double Median, double Fastest, double Slowest, double LinkMBps, double RawOneWay, double RawDuplex, int Gen2, double GcPauseMs)
    {
        /// <summary>The ring all-reduce's bound 2(N-1)/N x bytes / bandwidth, N = 2, in ms.</summary>
        public double Bound(long bytes) => bytes / (LinkMBps * 1e6) * 1000;
    }

    /// <summary>Median time of a 2-replica all-reduce of `floats` floats, through Akka.Remote or over the data plane.</summary>
    private static async Task<AllReduceTimes> AllReduce(ActorSystem system, IActorRef router, Peer peer, DataPlane? plane, int floats, int reps, int linkMb, TextWriter log)
    {
        var remote = await system.ActorSelection($"{peer.Akka}/user/reducer").ResolveOne(TimeSpan.FromSeconds(20));
        if (plane is not null)
        {
            // the peer's reducers answer over the data plane to this endpoint
            var registered = new TaskCompletionSource();
            router.Tell(new ReducerHost.Announce(remote, plane.Endpoint, registered));
            await registered.Task.WaitAsync(TimeSpan.FromSeconds(20));
        }
        var gradient = new float[floats];
        var rnd = new Random(5);
        for (var i = 0; i < floats; i++) gradient[i] = (float)rnd.NextDouble();
        var bytes = floats * 4L;
        List<double> times = [], link = [], oneWay = [], duplex = [];
        var (gen2, pause) = (GC.CollectionCount(2), GC.GetTotalPauseDuration());
        for (var r = 0; r < reps + 1; r++)
        {
            var done = new TaskCompletionSource<double>();
            var step = Interlocked.Increment(ref reduceStep);   // unique per all-reduce: the peer keeps one reducer per step
            // as a student sends (NodeServices.SendToStudent): from the gradient over the data plane, or as messages of their own through Akka
            Action<GradientSlice> send = plane is null ? c => remote.Tell(c.ToChunk()) : c => plane.Send(peer.DataEndpoint, c);
            // both replicas start sending at one instant, as replicas in lockstep do when their gradients are ready
            var startAt = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 20;
            var viaPlane = plane is not null;
            var a = system.ActorOf(Props.Create(() => new Reducer(send, remote, viaPlane, gradient, step, startAt, done)));
            // chunks that come to the router find this reducer by step
            router.Tell(new ReducerHost.Register(step, a));
            var ms = await done.Task.WaitAsync(TimeSpan.FromMinutes(2));
            await a.GracefulStop(TimeSpan.FromSeconds(5));
            if (r == 0) continue;   // warm-up
            times.Add(ms);
            link.Add(RawTcp(peer.TcpPort, linkMb));
            oneWay.Add(RawTcpSeconds(peer.TcpPort, bytes, duplex: false) * 1000);
            duplex.Add(RawTcpSeconds(peer.TcpPort, bytes, duplex: true) * 1000);
        }
        static double Median(List<double> xs) => xs.Order().ElementAt(xs.Count / 2);
        // (the references allocate their buffers: some of these collections are theirs)
        var t = new AllReduceTimes(Median(times), times.Min(), times.Max(), Median(link), Median(oneWay), Median(duplex),
            GC.CollectionCount(2) - gen2, (GC.GetTotalPauseDuration() - pause).TotalMilliseconds);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"[bench] all-reduce of {bytes / 1048576.0:F0} MiB between 2 processes, {(plane is null ? "Akka.Remote" : "data plane")}: {t.Median:F1} ms (fastest {t.Fastest:F1}, slowest {t.Slowest:F1}); ") +
            string.Create(CultureInfo.InvariantCulture, $"between them: link {t.LinkMBps:F0} MB/s, ring bound {t.Bound(bytes):F1} ms, raw TCP one way {t.RawOneWay:F1} ms, both ways at once {t.RawDuplex:F1} ms; {t.Gen2} gen-2 GCs, {t.GcPauseMs:F0} ms paused in this process"));
        return t;
    }

    /// <summary>
    /// One replica's side of the students' all-reduce, through the shipped <see cref="GradientExchange"/>:
    /// what the exchange sends the peer (two replicas: the whole gradient) in chunks from the agreed
    /// instant `startAt`, the peer's chunks taken as they arrive (and whatever they let the exchange
    /// send), and the mean once it is whole. The initiator (replica 0, done set) tells
    /// the peer's host to start a responder (replica 1) at the same instant; the responder tells the
    /// initiator when it sent and when it had the mean. The all-reduce takes from the first replica's
    /// first send until both hold the mean: Stopwatch reads CLOCK_MONOTONIC, one clock for every
    /// process on the machine, so the responder's times count and the Akka message that carries
    /// them does not.
    /// </summary>
    internal sealed class Reducer : ReceiveActor
    {
        public static readonly int Chunk = new ClusterSpec().GradientChunk;   // the students' default

        private sealed record Go(long At);

        /// <param name="peer">The initiator: the peer's host, told to start the responder. The responder: the initiator, told the times.</param>
        public Reducer(Action<GradientSlice> send, IActorRef peer, bool viaPlane, float[] gradient, long step, long startAt, TaskCompletionSource<double>? done)
        {
            var self = done is null ? 1 : 0;
            var exchange = new GradientExchange(2, self, gradient.Length, Chunk, r => $"bench/student/{r}");
            var first = exchange.Own(step, gradient);
            long sentAt = 0, meanAt = 0;
            (long Sent, long Mean)? peerAt = null;
            if (done is not null)
                peer.Tell(new EntityStatus(viaPlane ? "plane" : "akka", true, step, startAt, gradient.Length, 0, "bench", "prepare"));
            var me = Self;
            _ = Task.Run(async () =>
            {
                var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), startAt) - TimeSpan.FromMilliseconds(10);
                if (wait > TimeSpan.Zero) await Task.Delay(wait);   // wakes up to a few ms late on a busy VM: the rest is spun
                while (Stopwatch.GetTimestamp() < startAt) Thread.SpinWait(100);
                // sent from this thread, not after a hop to the actor's: the start is on time to ~0.1 ms
                // (the chunks and the gradient are read only; Send is thread-safe)
                var at = Stopwatch.GetTimestamp();
                foreach (var o in first) send(o.Slice);
                me.Tell(new Go(at));
            });
            void Check()
            {
                if (meanAt == 0 && exchange.TakeComplete(step) is { } all)
                {
                    // as a student does, less the optimiser step
                    ExactPool<float>.Shared.Return(all.TakeMean());
                    meanAt = Stopwatch.GetTimestamp();
                }
                if (meanAt == 0 || sentAt == 0) return;   // (the peer's chunks may all be in before this one's start)
                if (done is null) peer.Tell(new EntityStatus("bench/student/0", true, step, sentAt, 0, 0, "peer", meanAt.ToString(CultureInfo.InvariantCulture)));
                else if (peerAt is { } p)
                {
                    done.TrySetResult(Stopwatch.GetElapsedTime(Math.Min(sentAt, p.Sent), Math.Max(meanAt, p.Mean)).TotalMilliseconds);
                }
            }
            Receive<Go>(g =>
            {
                sentAt = g.At;
                Check();
            });
            Receive<GradientChunk>(c =>
            {
                var (verdict, outgoing) = exchange.Accept(c, step);
                if (verdict != ChunkVerdict.Accepted) throw new InvalidOperationException($"bench chunk {c.ChunkIndex} of step {c.Step} refused");
                foreach (var o in outgoing) send(o.Slice);
                Check();
            });
            Receive<EntityStatus>(m =>
            {
                peerAt = (m.Seq, long.Parse(m.Detail!, CultureInfo.InvariantCulture));
                Check();
            });
        }
    }

    /// <summary>
    /// One reducer per step. On the peer (plane given), a prepare message starts a responder that
    /// sends through Akka to the initiator, or over the data plane to the registered endpoint. In the
    /// bench process, routes the chunks that come over the data plane to the initiator of their step.
    /// </summary>
    private sealed class ReducerHost : ReceiveActor
    {
        public sealed record Register(long Step, IActorRef Reducer);
        /// <summary>Bench side: tell the peer's host our endpoint (its responders' chunks come here).</summary>
        public sealed record Announce(IActorRef Peer, string Endpoint, TaskCompletionSource Done);

        public ReducerHost(Func<DataPlane>? plane)
        {
            var byStep = new Dictionary<long, IActorRef>();
            // the responder's gradient exists before the exchange, as a replica's does when it sends
            var gradients = new Dictionary<long, float[]>();
            string? endpoint = null;
            // a chunk over the data plane may overtake the prepare message on Akka
            var early = new Dictionary<long, List<GradientChunk>>();
            Receive<Register>(r => byStep[r.Step] = r.Reducer);
            TaskCompletionSource? announced = null;
            Receive<Announce>(a =>
            {
                announced = a.Done;
                a.Peer.Tell(new ReplicaAt("bench/student/1", 0, 0, 1, a.Endpoint));
            });
            Receive<ReplicaAt>(m =>
            {
                endpoint = m.DataEndpoint;
                Sender.Tell(new EntityStatus(m.EntityId, true, 0, 0, 0, 0, "peer", "registered"));
            });
            Receive<EntityStatus>(m =>
            {
                if (m.Detail == "registered") announced?.TrySetResult();
                if (m.Detail != "prepare" || plane is null) return;
                var initiator = Sender;
                var to = endpoint;
                if (!gradients.TryGetValue(m.Queue, out var gradient)) gradients[m.Queue] = gradient = new float[m.Queue];
                Action<GradientSlice> send = m.EntityId == "akka" ? x => initiator.Tell(x.ToChunk()) : x => plane().Send(to!, x);
                var viaPlane = m.EntityId == "plane";
                var responder = byStep[m.Step] = Context.ActorOf(Props.Create(() => new Reducer(send, initiator, viaPlane, gradient, m.Step, m.Seq, null)));
                if (early.Remove(m.Step, out var waiting)) waiting.ForEach(c => responder.Tell(c));
            });
            Receive<GradientChunk>(c =>
            {
                if (byStep.TryGetValue(c.Step, out var r)) r.Forward(c);
                else if (plane is not null) (early.TryGetValue(c.Step, out var l) ? l : early[c.Step] = []).Add(c);
            });
        }
    }
}
