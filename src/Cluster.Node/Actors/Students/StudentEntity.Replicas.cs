using System.Collections.Immutable;
using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Akka.Persistence;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Students;
using Cluster.Node.Hosting;
using Cluster.Node.Transport;
using Distill.Engine.Methods;
using Distill.Engine.Pipeline;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using static Cluster.Node.Actors.StudentJobs;

namespace Cluster.Node.Actors;

/// <summary>The replicas' protocol: lockstep (<see cref="ReplicaDecisions"/>) and the all-reduce (<see cref="GradientExchange"/>).</summary>
public sealed partial class StudentEntity
{
    /// <param name="restored">Just restored (ready, rolled back): our next gradient is computed again.</param>
    private void AnnounceStep(Func<int, bool> toPeer, bool restored = false)
    {
        if (Replicas < 2) return;
        for (var peer = 0; peer < Replicas; peer++)
            if (peer != replica && toPeer(peer))
                Services.Students.Tell(new ReplicaAt(EntityId.Student(RunId, peer), replica, step, lrScale, Services.DataEndpoint, restored));
    }

    private void OnReplicaAt(ReplicaAt m)
    {
        peerEndpoints[m.FromReplica] = m.DataEndpoint;
        if (trainer is null || State.Finished) return;   // it hears our step when we are ready
        // chunks and announcements travel apart: what was dropped may have been the new copy, so the
        // peer hears our step at once and sends its gradient again (a duplicate is harmless)
        if (m.Restored && m.Step == step && exchange!.PeerRestored(step + 1, m.FromReplica)) AnnounceStep(peer => peer == m.FromReplica);
        var own = exchange!.OwnAt(step + 1);
        switch (ReplicaDecisions.OnPeerAt(step, lrScale, pendingRollback?.Step, m.Step, m.LrScale, own is not null))
        {
            case PeerAnswer.RollBack:
                Log.Warning("{0}: replica {1} is at step {2}, this one at {3}: rolling back to keep the replicas in lockstep", Id, m.FromReplica, m.Step, step);
                var (to, scale) = ReplicaDecisions.RollbackTo(m.Step, m.LrScale, lrScale);
                pendingRollback = (to, scale, m.FromReplica);
                if (!computing) RollBackToPeer();
                break;
            case PeerAnswer.Announce: AnnounceStep(peer => peer == m.FromReplica); break;
            case PeerAnswer.ResendGradient: Send(exchange!.Resend(step + 1, m.FromReplica)); break;   // it may have died with its node
        }
    }

    private void OnOwnGradient(GradientReady g)
    {
        computing = false;
        if (pendingRollback is not null) { RollBackToPeer(); return; }
        stepImages = g.Images;
        Send(exchange!.Own(g.Seq, g.Gradient));
        TryReduce(g.Seq);
    }

    /// <summary>The exchange's chunks, each to its peer's data plane (or through Akka).</summary>
    private void Send(IReadOnlyList<Outgoing> outgoing)
    {
        foreach (var o in outgoing) Services.SendToStudent(o.Slice, peerEndpoints.GetValueOrDefault(o.Peer));
    }

    private void OnChunk(GradientChunk c)
    {
        if (exchange is null) { early.Add(c); return; }   // a peer started first: keep its chunks until we are ready
        var (verdict, outgoing) = exchange.Accept(c, step + 1);
        if (verdict == ChunkVerdict.Misfit)
        {
            Fail($"gradient chunk from replica {c.FromReplica} at offset {c.Offset} does not fit a model of {gradientSize} parameters in {Replicas} shards");
            return;
        }
        Send(outgoing);
        TryReduce(c.Step);
    }

    private void TryReduce(long seq)
    {
        // not while a job runs: a restore (the lockstep's rollback) must not have a step applied after it
        if (computing || failed || pendingRollback is not null || seq != step + 1 || exchange!.TakeComplete(seq) is not { } all) return;
        computing = true;
        var (t, after, images, check) = (trainer!, AfterStepOf(seq), stepImages, guard is not null && ReadsLoss(seq));
        EngineAccess.Compute(Self, () => Apply(t, all, seq, check, after, images));
    }

    private void RollBackToPeer()
    {
        var (to, scale, from) = pendingRollback!.Value;
        pendingRollback = null;
        // a guard rollback finished since the peer's step came in may have lowered our rate further
        scale = Math.Min(scale, lrScale);
        Restore(State.Checkpoints.Where(c => c.Step <= to).ToImmutableList(), t => t.LrScale = scale,
            (_, warning, _) => $"replica {from} resumed at step {to}" + (warning is null ? "" : $" ({warning})"), guard: false, $"rollback to replica {from}'s step {to}");
    }
}
