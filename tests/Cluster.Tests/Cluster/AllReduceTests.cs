using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;
using Cluster.Node.Actors;
using Cluster.Node.Transport;

namespace Cluster.Tests.Cluster;

/// <summary>The all-reduce's reduction as chunks arrive, and the pool its arrays come from.</summary>
public sealed class AllReduceTests
{
    private static float[] Random(int seed, int n)
    {
        var rnd = new Random(seed);
        return [.. Enumerable.Range(0, n).Select(_ => (float)(rnd.NextDouble() * 2e3 - 1e3))];
    }

    private static int[] Bits(float[] xs) => [.. xs.Select(BitConverter.SingleToInt32Bits)];

    [Theory]
    [InlineData(2, 0)]
    [InlineData(2, 1)]
    [InlineData(3, 1)]
    [InlineData(4, 3)]
    public void The_mean_reduced_as_chunks_arrive_has_the_bits_of_the_mean_of_whole_gradients(int replicas, int self)
    {
        const int size = 10_007;
        var g = Enumerable.Range(0, replicas).Select(r => Random(20 + r, size)).ToArray();
        var x = new GradientExchange(replicas, self, size);
        // a peer's chunks before this replica's own gradient, the rest after it, the order mixed
        var chunks = Enumerable.Range(0, replicas).Where(r => r != self)
            .SelectMany(r => GradientExchange.Chunks("r/student/0", 3, r, g[r], 2048)).OrderBy(c => (c.ChunkIndex * 7 + c.FromReplica) % 5).ToList();
        foreach (var c in chunks.Take(chunks.Count / 2)) Assert.Equal(ChunkVerdict.Accepted, x.Accept(c, 3));
        x.Own(3, g[self]);
        foreach (var c in chunks.Skip(chunks.Count / 2)) Assert.Equal(ChunkVerdict.Accepted, x.Accept(c, 3));
        var mean = x.TakeComplete(3)!.TakeMean();
        var expected = new float[size];
        for (var i = 0; i < size; i++)
        {
            var acc = g[0][i];
            for (var r = 1; r < replicas; r++) acc += g[r][i];
            expected[i] = acc / replicas;
        }
        Assert.Equal(Bits(expected), Bits(mean));
        Assert.Equal(Bits(expected), Bits(GradientExchange.Mean(g)));
    }

    [Fact]
    public void Peers_that_chunk_differently_are_reduced_at_the_end_with_the_same_bits()
    {
        const int size = 9000;
        var g = Enumerable.Range(0, 3).Select(r => Random(40 + r, size)).ToArray();
        var x = new GradientExchange(3, 0, size);
        x.Own(1, g[0]);
        foreach (var c in GradientExchange.Chunks("r/student/0", 1, 1, g[1], 1000)) x.Accept(c, 1);
        foreach (var c in GradientExchange.Chunks("r/student/0", 1, 2, g[2], 4096)) x.Accept(c, 1);
        var expected = new float[size];
        for (var i = 0; i < size; i++) expected[i] = (g[0][i] + g[1][i] + g[2][i]) / 3;
        Assert.Equal(Bits(expected), Bits(x.TakeComplete(1)!.TakeMean()));
    }

    [Fact]
    public void Taking_the_mean_uses_the_step_up_and_hands_the_chunks_arrays_back()
    {
        var pool = ExactPool<byte>.Shared;
        var x = new GradientExchange(2, 0, 3001);
        x.Own(5, Random(1, 3001));
        // a length no other test uses: the pool's count for it is this test's
        var chunk = new GradientChunk("r/student/0", 5, 1, 0, 1, 0, new TensorPayload([3001], WireDType.Float32, Bits(Random(2, 3001)).SelectMany(BitConverter.GetBytes).ToArray()));
        x.Accept(chunk, 5);
        var all = x.TakeComplete(5)!;
        all.TakeMean();
        Assert.Same(chunk.Values.Data, pool.Rent(3001 * 4));   // the chunk's array, back in the pool
        Assert.Contains("taken already", Assert.Throws<InvalidOperationException>(() => all.TakeMean()).Message);
        Assert.Contains("taken already", Assert.Throws<InvalidOperationException>(() => all.Of(1)).Message);
    }

    [Fact]
    public void The_pool_gives_exact_lengths_reuses_what_comes_back_and_keeps_no_more_than_its_limit()
    {
        var pool = new ExactPool<float>(maxBytes: 40_000);
        var a = pool.Rent(1234);
        Assert.Equal(1234, a.Length);
        pool.Return(a);
        Assert.Equal(1234 * 4, pool.PooledBytes);
        Assert.NotSame(a, pool.Rent(1235));
        Assert.Same(a, pool.Rent(1234));
        Assert.Equal(0, pool.PooledBytes);
        // 40,000 bytes at most: a third array of 16,000 is left to the GC
        var three = Enumerable.Range(0, 3).Select(_ => new float[4000]).ToList();
        three.ForEach(pool.Return);
        Assert.Equal(32_000, pool.PooledBytes);
        Assert.Same(three[1], pool.Rent(4000));
    }
}
