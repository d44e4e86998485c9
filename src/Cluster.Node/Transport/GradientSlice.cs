using CommunityToolkit.HighPerformance;
using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;

namespace Cluster.Node.Transport;

/// <summary>
/// A gradient chunk still in the replica's own gradient: the data plane writes its values to the
/// socket from there, with no copy. Only where it must become a message (through Akka, or to this
/// node) is it made a <see cref="GradientChunk"/>, copied into an array of its own. The values
/// must not change until they are sent: a replica writes its gradient for a step once more, in its
/// own shard, with the mean that it then sends from there (<see cref="Cluster.Node.Actors.GradientExchange"/>).
/// </summary>
public sealed record GradientSlice(string EntityId, long Step, int FromReplica, int ChunkIndex, int ChunkCount, float[] Gradient, int Offset, int Count)
{
    /// <summary>The chunk's header as the data plane encodes it (its values follow as bulk bytes).</summary>
    public GradientChunk Header => new(EntityId, Step, FromReplica, ChunkIndex, ChunkCount, Offset, new TensorPayload([Count], WireDType.Float32, []));

    /// <summary>The values as bytes, in place.</summary>
    public ReadOnlyMemory<byte> Bytes => Gradient.AsMemory(Offset, Count).AsBytes();

    /// <summary>The chunk as a message of its own (its values copied into an <see cref="ExactPool{T}"/> array).</summary>
    public GradientChunk ToChunk()
    {
        var bytes = ExactPool<byte>.Shared.Rent(Count * 4);
        Bytes.Span.CopyTo(bytes);
        return Header with { Values = new TensorPayload([Count], WireDType.Float32, bytes) };
    }

    /// <summary>`gradient`'s values [from, to) (all of it by default) as the slices of at most `chunk` values one peer receives.</summary>
    public static IEnumerable<GradientSlice> Of(string toEntity, long step, int fromReplica, float[] gradient, long chunk, long from = 0, long? to = null)
    {
        var end = to ?? gradient.Length;
        var count = (int)((end - from + chunk - 1) / chunk);
        for (var c = 0; c < count; c++)
        {
            var offset = from + c * chunk;
            yield return new GradientSlice(toEntity, step, fromReplica, c, count, gradient, (int)offset, (int)Math.Min(chunk, end - offset));
        }
    }
}
