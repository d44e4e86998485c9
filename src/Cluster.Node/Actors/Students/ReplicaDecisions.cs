namespace Cluster.Node.Actors;

/// <summary>What a replica does on hearing a peer's step (<see cref="Cluster.Contracts.Students.ReplicaAt"/>).</summary>
public enum PeerAnswer
{
    /// <summary>Nothing: the peer is where we are and has our gradient, or we cannot tell yet.</summary>
    None,
    /// <summary>The peer is behind (or at our step with a lower learning rate after its guard rolled back): go back to it.</summary>
    RollBack,
    /// <summary>The peer is ahead: tell it our step, so that it comes back to us.</summary>
    Announce,
    /// <summary>The peer is at our step: send it again what it needs of ours, our gradient (or its shard of it) and our shard's mean so far (it may have died with the first).</summary>
    ResendGradient,
}

/// <summary>
/// The replicas' lockstep, as pure decisions over a replica's step and learning-rate scale
/// (tested without an actor). The guard's decisions are the engine's <see cref="Distill.Engine.Methods.DivergenceGuard"/>.
/// </summary>
public static class ReplicaDecisions
{
    /// <summary>
    /// Replicas train the same step with the same learning rate: the lower step wins, and at one
    /// step the lower scale. `rollingBackTo` is a rollback already decided and not yet done.
    /// </summary>
    public static PeerAnswer OnPeerAt(long step, double lrScale, long? rollingBackTo, long peerStep, double peerLrScale, bool haveOwnGradient)
    {
        var target = rollingBackTo ?? step;
        if (peerStep < target || peerStep == target && peerLrScale < lrScale) return PeerAnswer.RollBack;
        if (peerStep > step) return PeerAnswer.Announce;
        return haveOwnGradient ? PeerAnswer.ResendGradient : PeerAnswer.None;
    }

    /// <summary>The rollback a peer's step asks for: to its step, at the lower of the two scales.</summary>
    public static (long Step, double LrScale) RollbackTo(long peerStep, double peerLrScale, double lrScale) => (peerStep, Math.Min(peerLrScale, lrScale));
}
