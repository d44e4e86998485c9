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
