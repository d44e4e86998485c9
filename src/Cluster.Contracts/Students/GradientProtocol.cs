using Cluster.Contracts.Tensors;
using MessagePack;

namespace Cluster.Contracts.Students;

/// <summary>
/// One chunk of a replica's flattened gradient for a step. Replicas exchange all chunks and sum
/// them in replica order 0..N-1, so every replica applies bit-identical updates. Chunked so that no
/// frame exceeds Akka.Remote's limit and heartbeats are not stuck behind one huge message.
/// </summary>
[MessagePackObject]
public sealed record GradientChunk(
    [property: Key(0)] string EntityId,
    [property: Key(1)] long Step,
    [property: Key(2)] int FromReplica,
    [property: Key(3)] int ChunkIndex,
    [property: Key(4)] int ChunkCount,
    [property: Key(5)] long Offset,
    [property: Key(6)] TensorPayload Values) : IEntityMessage;

/// <summary>
/// A replica tells a peer the step it stands at: after it restored a checkpoint (its node died,
/// the guard rolled it back), and again while it waits on that peer's gradient. Replicas step in
/// lockstep, so a peer that is ahead rolls back to its checkpoint at that step (or the newest one
/// before it, and says so in turn); one that is behind answers with its own step; one at the same
/// step sends its gradient for the next step again (the first copy may have died with the node).
/// LrScale carries the learning-rate scale of the guard's rollbacks, so every replica uses one rate.
/// DataEndpoint: the sender's data plane (host:port), where its peers send their gradient chunks.
/// Restored: the sender has just restored its state (started, failed over, rolled back), so its
/// gradient for the next step is computed again, and a copy a peer holds is from before.
/// </summary>
[MessagePackObject]
public sealed record ReplicaAt(
    [property: Key(0)] string EntityId,
    [property: Key(1)] int FromReplica,
    [property: Key(2)] long Step,
    [property: Key(3)] double LrScale,
    [property: Key(4)] string? DataEndpoint = null,
    [property: Key(5)] bool Restored = false) : IEntityMessage;
