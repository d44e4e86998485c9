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

    /// <summary>Median time of a 2-replica all-reduce of `floats` floats, through Akka.Remote or over the data plane.</summary>
    private static async Task<double> AllReduce(ActorSystem system, IActorRef router, Peer peer, DataPlane? plane, int floats, int reps, TextWriter log)
    {
        var remote = await system.ActorSelection($"akka.tcp://bench-peer@127.0.0.1:{peer.AkkaPort}/user/reducer").ResolveOne(TimeSpan.FromSeconds(20));
        if (plane is not null)
        {
            // the peer's reducers answer over the data plane to this endpoint, and confirm through Akka to the router
            var registered = new TaskCompletionSource();
            router.Tell(new ReducerHost.Announce(remote, plane.Endpoint, registered));
            await registered.Task.WaitAsync(TimeSpan.FromSeconds(20));
        }
        var gradient = new float[floats];
        var rnd = new Random(5);
        for (var i = 0; i < floats; i++) gradient[i] = (float)rnd.NextDouble();
        var times = new List<double>();
        for (var r = 0; r < reps + 1; r++)
        {
            var done = new TaskCompletionSource<double>();
            var step = Interlocked.Increment(ref reduceStep);   // unique per all-reduce: the peer keeps one reducer per step
            Action<GradientChunk> send = plane is null ? c => remote.Tell(c) : c => plane.Send(peer.DataEndpoint, c);
            var a = system.ActorOf(Props.Create(() => new Reducer(send, null, gradient, step, done)));
            // chunks and the confirmation that come to the router find this reducer by step
            router.Tell(new ReducerHost.Register(step, a));
            var ms = await done.Task.WaitAsync(TimeSpan.FromMinutes(2));
            await a.GracefulStop(TimeSpan.FromSeconds(5));
            if (r > 0) times.Add(ms);   // the first is warm-up
        }
        times.Sort();
        var median = times[times.Count / 2];
        log.WriteLine($"[bench] all-reduce of {floats * 4.0 / 1048576:F0} MiB between 2 processes, {(plane is null ? "Akka.Remote" : "data plane")}: {median:F1} ms");
        return median;
    }

    /// <summary>
    /// One replica's side of the students' all-reduce, through the shipped <see cref="GradientExchange"/>:
    /// its gradient in chunks to the peer, the peer's chunks taken as they arrive, and the mean once
    /// both are whole; done when the peer confirmed it has ours too. The initiator (replica 0, done
    /// set) sends first; the responder (replica 1) sends when the first chunk arrives and confirms to
    /// confirmTo once it has reduced.
    /// </summary>
    internal sealed class Reducer : ReceiveActor
    {
        public static readonly int Chunk = new ClusterSpec().GradientChunk;   // the students' default

        public Reducer(Action<GradientChunk> send, IActorRef? confirmTo, float[] gradient, long step, TaskCompletionSource<double>? done)
        {
            var sw = Stopwatch.StartNew();
            var self = done is null ? 1 : 0;
            var exchange = new GradientExchange(2, self, gradient.Length);
            exchange.Own(step, gradient);
            var sent = false;
            float[]? mean = null;
            var peerHasOurs = false;
            void SendAll()
            {
                sent = true;
                foreach (var c in GradientExchange.Chunks($"bench/student/{1 - self}", step, self, gradient, Chunk)) send(c);
            }
            void Check()
            {
                mean ??= exchange.TakeComplete(step)?.Mean();
                if (mean is null || !peerHasOurs && done is not null) return;
                if (done is null) confirmTo!.Tell(new EntityStatus("bench/student/0", true, step, step, 0, 0, "peer", "reduced"));
                else done.TrySetResult(sw.Elapsed.TotalMilliseconds);
            }
            if (done is not null) SendAll();
            Receive<GradientChunk>(c =>
            {
                if (!sent) SendAll();
                if (exchange.Accept(c, step) != ChunkVerdict.Accepted) throw new InvalidOperationException($"bench chunk {c.ChunkIndex} of step {c.Step} refused");
                Check();
            });
            Receive<EntityStatus>(_ => { peerHasOurs = true; Check(); });
        }
    }

    /// <summary>
    /// One reducer per step. On the peer (plane given), a step's first chunk starts a responder that
    /// answers through Akka to the chunk's sender, or over the data plane to the registered endpoint.
    /// In the bench process, routes chunks and confirmations to the registered initiator of the step.
    /// </summary>
    private sealed class ReducerHost : ReceiveActor
    {
        public sealed record Register(long Step, IActorRef Reducer);
        /// <summary>Bench side: tell the peer's host our endpoint (confirmations come back here).</summary>
        public sealed record Announce(IActorRef Peer, string Endpoint, TaskCompletionSource Done);

        public ReducerHost(Func<DataPlane>? plane)
        {
            var byStep = new Dictionary<long, IActorRef>();
            IActorRef replyTo = ActorRefs.Nobody;
            string? endpoint = null;
            Receive<Register>(r => byStep[r.Step] = r.Reducer);
            TaskCompletionSource? announced = null;
            Receive<Announce>(a =>
            {
                announced = a.Done;
                a.Peer.Tell(new ReplicaAt("bench/student/1", 0, 0, 1, a.Endpoint));
            });
            Receive<ReplicaAt>(m =>
            {
                (replyTo, endpoint) = (Sender, m.DataEndpoint);
                Sender.Tell(new EntityStatus(m.EntityId, true, 0, 0, 0, 0, "peer", "registered"));
            });
            Receive<EntityStatus>(m =>
            {
                if (m.Detail == "registered") announced?.TrySetResult();
                else if (byStep.TryGetValue(m.Step, out var r)) r.Forward(m);
            });
            Receive<GradientChunk>(c =>
            {
                if (!byStep.TryGetValue(c.Step, out var r))
                {
                    if (plane is null) return;
                    var size = c.ChunkCount * Reducer.Chunk;
                    var viaAkka = CameOverAkka(Sender, Context.System);
                    var target = viaAkka ? Sender : replyTo;
                    var to = endpoint;
                    Action<GradientChunk> send = viaAkka ? x => target.Tell(x) : x => plane().Send(to!, x);
                    byStep[c.Step] = r = Context.ActorOf(Props.Create(() => new Reducer(send, target, new float[size], c.Step, null)));
                }
                r.Forward(c);
            });
        }
    }
}
