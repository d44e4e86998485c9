using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;
using Cluster.Node.Actors;
using Cluster.Node.Transport;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The all-reduce as a reduce-scatter and an all-gather between N <see cref="GradientExchange"/>s
/// that pass each other their chunks in a shuffled order, some twice; and the pool its arrays come from.
/// </summary>
public sealed class AllReduceTests
{
    private static float[] Random(int seed, int n)
    {
        var rnd = new Random(seed);
        return [.. Enumerable.Range(0, n).Select(_ => (float)(rnd.NextDouble() * 2e3 - 1e3))];
    }

    private static int[] Bits(float[] xs) => [.. xs.Select(BitConverter.SingleToInt32Bits)];

    /// <summary>The scalar loop: ((g0 + g1) + g2 ...) / N per element in float32.</summary>
    private static float[] Expected(float[][] g)
    {
        var mean = new float[g[0].Length];
        for (var i = 0; i < mean.Length; i++)
        {
            var acc = g[0][i];
            for (var r = 1; r < g.Length; r++) acc += g[r][i];
            mean[i] = acc / g.Length;
        }
        return mean;
    }

    /// <summary>
    /// N replicas' exchanges, each chunking with its own size, their own gradients handed in at
    /// random moments, every outgoing chunk delivered as a message of its own (a copy, as through
    /// Akka or a socket) in a random order, one in five of them twice. Returns each replica's mean
    /// and the floats each sent (duplicates not counted).
    /// </summary>
    internal static (float[][] Means, long[] Sent) Simulate(float[][] g, int[] chunks, int seed, long step = 3)
    {
        var n = g.Length;
        var size = g[0].Length;
        var x = Enumerable.Range(0, n).Select(r => new GradientExchange(n, r, size, chunks[r], p => $"r/student/{p}")).ToArray();
        var rnd = new Random(seed);
        var queue = new List<(int To, GradientChunk C)>();
        var sent = new long[n];
        void Enqueue(int from, IReadOnlyList<Outgoing> outgoing)
        {
            foreach (var o in outgoing)
            {
                Assert.NotEqual(from, o.Peer);
                Assert.Equal($"r/student/{o.Peer}", o.Slice.EntityId);
                sent[from] += o.Slice.Count;
                queue.Add((o.Peer, o.Slice.ToChunk()));
            }
        }
        // the exchange writes its shard's mean into the gradient it is given: each gets a copy
        var order = Enumerable.Range(0, n).OrderBy(_ => rnd.Next()).ToList();
        var owned = 0;
        while (owned < n || queue.Count > 0)
        {
            if (owned < n && (queue.Count == 0 || rnd.Next(3) == 0))
            {
                var r = order[owned++];
                Enqueue(r, x[r].Own(step, (float[])g[r].Clone()));
                continue;
            }
            var i = rnd.Next(queue.Count);
            var (to, c) = queue[i];
            queue.RemoveAt(i);
            if (rnd.Next(5) == 0) queue.Add((to, c with { Values = c.Values with { Data = [.. c.Values.Data] } }));
            var (verdict, outgoing) = x[to].Accept(c, step);
            Assert.Equal(ChunkVerdict.Accepted, verdict);
            Enqueue(to, outgoing);
        }
        return ([.. x.Select(e => e.TakeComplete(step)!.TakeMean())], sent);
    }

    [Theory]
    [InlineData(2, 2048)]
    [InlineData(3, 2048)]
    [InlineData(4, 1000)]
    [InlineData(5, 777)]
    [InlineData(2, 1 << 18)]
    public void Every_replica_gets_the_bits_of_the_mean_of_whole_gradients_and_sends_the_ring_volume(int replicas, int chunk)
    {
        const int size = 10_007;
        var g = Enumerable.Range(0, replicas).Select(r => Random(20 + r, size)).ToArray();
        for (var seed = 0; seed < 3; seed++)
        {
            var (means, sent) = Simulate(g, [.. Enumerable.Repeat(chunk, replicas)], seed);
            foreach (var mean in means) Assert.Equal(Bits(Expected(g)), Bits(mean));
            // shard q to replica q, then its own shard's mean to every peer: 2(N-1)/N of a gradient
            var x = new GradientExchange(replicas, 0, size, chunk, _ => "");
            for (var r = 0; r < replicas; r++)
            {
                var (from, to) = x.Shard(r);
                Assert.Equal(size + (replicas - 2) * (to - from), sent[r]);
            }
        }
    }

    [Fact]
    public void Replicas_that_chunk_differently_reduce_at_the_end_with_the_same_bits()
    {
        const int size = 9000;
        var g = Enumerable.Range(0, 3).Select(r => Random(40 + r, size)).ToArray();
        var (means, _) = Simulate(g, [1000, 4096, 777], seed: 7);
        foreach (var mean in means) Assert.Equal(Bits(Expected(g)), Bits(mean));
    }

    [Fact]
    public void The_sum_runs_in_replica_order_whoever_owns_the_element()
    {
        // float32 addition is not associative: (1e8 + 1) - 1e8 is 0 in this order, 1 in another.
        // Three replicas and one value: shards 0 and 1 are empty, replica 2 reduces it for all.
        float[][] g = [[1e8f], [1f], [-1e8f]];
        var (means, _) = Simulate(g, [2, 2, 2], seed: 1);
        Assert.All(means, m => Assert.Equal(0f, m[0]));
        // the SIMD lanes and the scalar tail give the scalar loop's bits, across L1 blocks (4,096 values)
        var wide = Enumerable.Range(0, 3).Select(r => Random(60 + r, 3 * 4096 + 13)).ToArray();
        foreach (var mean in Simulate(wide, [3001, 3001, 3001], seed: 2).Means) Assert.Equal(Bits(Expected(wide)), Bits(mean));
    }

    [Theory]
    [InlineData(2, 5)]       // two replicas: the whole gradient (5 chunks of 1,024 of 5,000 values)
    [InlineData(3, 2 + 2)]   // three: our gradient's shard for it, and our shard's mean so far (2 chunks each)
    public void A_replica_that_lost_the_step_gets_what_it_needs_again(int replicas, int resentChunks)
    {
        const int size = 5000;
        const long step = 4;
        var g = Enumerable.Range(0, replicas).Select(r => Random(80 + r, size)).ToArray();
        var x = Enumerable.Range(0, replicas).Select(r => new GradientExchange(replicas, r, size, 1024, p => $"r/student/{p}")).ToArray();
        void Deliver(List<Outgoing> outgoing, int? lost) => DeliverAll(x, step, outgoing, lost);
        const int last = 1;
        // three replicas: its gradient went out, and what came back was lost with its node; two: its
        // node died before its gradient went out (had it gone out, the peer would have the mean and
        // step on, and the replica would come back behind it: the lockstep's rollback, not this)
        var sources = Enumerable.Range(0, replicas).Where(r => replicas > 2 || r != last);
        Deliver([.. sources.SelectMany(r => x[r].Own(step, (float[])g[r].Clone()))], lost: last);
        Assert.All(Enumerable.Range(0, replicas).Where(r => r != last), r => Assert.Null(x[r].TakeComplete(step)));
        Assert.DoesNotContain(last, x[0].Complete(step));
        // the replica comes back at the step and computes its gradient again; each peer resends what it needs
        x[last] = new GradientExchange(replicas, last, size, 1024, p => $"r/student/{p}");
        List<Outgoing> again = [.. x[last].Own(step, (float[])g[last].Clone())];
        foreach (var r in Enumerable.Range(0, replicas).Where(r => r != last))
        {
            var resent = x[r].Resend(step, last);
            Assert.Equal(resentChunks, resent.Count);
            Assert.All(resent, o => Assert.Equal(last, o.Peer));
            again.AddRange(resent);
        }
        Deliver(again, lost: null);   // what the others had already is taken as the duplicate it is
        var expected = Bits(Expected(g));
        foreach (var e in x) Assert.Equal(expected, Bits(e.TakeComplete(step)!.TakeMean()));
    }

    [Theory]
    [InlineData(false)]   // the old copy came before our own gradient: nothing reduced with it yet
    [InlineData(true)]    // our own gradient was in too: all of the old copy reduced, the mean not yet taken
    public void Two_replicas_drop_a_restored_peers_old_gradient_and_both_apply_the_mean_of_its_new_one(bool ownFirst)
    {
        const int size = 5000;
        const long step = 6;
        var g0 = Random(90, size);
        var old = Random(91, size);
        // recomputed on a GPU: the same gradient but for the last bit of some values
        var recomputed = (float[])old.Clone();
        for (var i = 0; i < size; i += 7) recomputed[i] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(recomputed[i]) ^ 1);
        var x = new[] { new GradientExchange(2, 0, size, 1024, p => $"r/student/{p}"), new GradientExchange(2, 1, size, 1024, p => $"r/student/{p}") };
        void Deliver(IEnumerable<Outgoing> outgoing)
        {
            foreach (var o in outgoing) Assert.Equal(ChunkVerdict.Accepted, x[o.Peer].Accept(o.Slice.ToChunk(), step).Verdict);
        }
        List<Outgoing> fromZero = [];
        if (ownFirst) fromZero.AddRange(x[0].Own(step, (float[])g0.Clone()));
        // replica 1's gradient reaches replica 0, and replica 1's node dies before it has replica 0's
        Deliver(x[1].Own(step, (float[])old.Clone()));
        // it comes back at the step before (its checkpoint) and says so: replica 0 forgets the old copy
        x[0].PeerRestored(step, 1);
        Assert.Null(x[0].TakeComplete(step));
        Assert.DoesNotContain(1, x[0].Complete(step));
        x[1] = new GradientExchange(2, 1, size, 1024, p => $"r/student/{p}");
        Deliver(x[1].Own(step, (float[])recomputed.Clone()));
        if (!ownFirst) fromZero.AddRange(x[0].Own(step, (float[])g0.Clone()));
        else fromZero = [.. x[0].Resend(step, 1)];   // as replica 0 answers the restored replica at its step
        Deliver(fromZero);
        var expected = Bits(Expected([g0, recomputed]));
        Assert.NotEqual(Bits(Expected([g0, old])), expected);
        foreach (var e in x) Assert.Equal(expected, Bits(e.TakeComplete(step)!.TakeMean()));
    }

    [Fact]
    public void Three_replicas_apply_the_same_bits_when_a_restored_peer_computes_its_gradient_again()
    {
        const int size = 3000;
        const long step = 2;
        var g = Enumerable.Range(0, 3).Select(r => Random(95 + r, size)).ToArray();
        var recomputed = (float[])g[1].Clone();
        for (var i = 0; i < size; i += 5) recomputed[i] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(recomputed[i]) ^ 1);
        var x = Enumerable.Range(0, 3).Select(r => new GradientExchange(3, r, size, 512, p => $"r/student/{p}")).ToArray();
        void Deliver(List<Outgoing> outgoing, int? lost) => DeliverAll(x, step, outgoing, lost);
        // replica 1's old gradient reaches the owners of shards 0 and 2, which reduce with it; then its node dies
        Deliver([.. x[0].Own(step, (float[])g[0].Clone()), .. x[2].Own(step, (float[])g[2].Clone()), .. x[1].Own(step, (float[])g[1].Clone())], lost: 1);
        x[1] = new GradientExchange(3, 1, size, 512, p => $"r/student/{p}");
        x[0].PeerRestored(step, 1);
        x[2].PeerRestored(step, 1);
        Deliver([.. x[1].Own(step, (float[])recomputed.Clone()), .. x[0].Resend(step, 1), .. x[2].Resend(step, 1)], lost: null);
        var means = x.Select(e => Bits(e.TakeComplete(step)!.TakeMean())).ToArray();
        Assert.Equal(means[0], means[1]);
        Assert.Equal(means[0], means[2]);
        // shards 0 and 2 hold the old copy's mean, shard 1 the new one's
        var (oldMean, newMean) = (Bits(Expected([g[0], g[1], g[2]])), Bits(Expected([g[0], recomputed, g[2]])));
        Assert.Equal(oldMean[..1000], means[0][..1000]);
        Assert.Equal(newMean[1000..2000], means[0][1000..2000]);
        Assert.Equal(oldMean[2000..], means[0][2000..]);
    }

    /// <summary>Delivers chunks, and what they let their receivers send, until none are left; those for replica `lost` go with its node.</summary>
    private static void DeliverAll(GradientExchange[] x, long step, List<Outgoing> outgoing, int? lost)
    {
        while (outgoing.Count > 0)
        {
            var o = outgoing[0];
            outgoing.RemoveAt(0);
            if (o.Peer == lost) continue;
            var (verdict, more) = x[o.Peer].Accept(o.Slice.ToChunk(), step);
            Assert.Equal(ChunkVerdict.Accepted, verdict);
            outgoing.AddRange(more);
        }
    }

    private static GradientChunk Chunk(long step, int from, long offset, params float[] values)
    {
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return new GradientChunk("r/student/0", step, from, 0, 1, offset, new TensorPayload([values.Length], WireDType.Float32, bytes));
    }

    [Fact]
    public void Chunks_of_other_steps_are_stale_and_ranges_in_no_shard_they_could_hold_do_not_fit()
    {
        // three replicas, six values: shards [0, 2), [2, 4), [4, 6); this is replica 0
        var x = new GradientExchange(3, 0, 6, 2, p => $"r/student/{p}");
        x.Own(5, [1f, 2f, 3f, 4f, 5f, 6f]);
        Assert.Equal(ChunkVerdict.Stale, x.Accept(Chunk(4, 1, 0, 9f, 9f), 5).Verdict);
        Assert.Equal(ChunkVerdict.Stale, x.Accept(Chunk(7, 1, 0, 9f, 9f), 5).Verdict);
        Assert.Equal(ChunkVerdict.Stale, x.Accept(Chunk(5, 0, 0, 9f, 9f), 5).Verdict);   // from ourselves
        Assert.Equal(ChunkVerdict.Misfit, x.Accept(Chunk(5, 1, 4, 9f, 9f), 5).Verdict);  // replica 1 sends only our shard or its own
        Assert.Equal(ChunkVerdict.Misfit, x.Accept(Chunk(5, 2, 1, 9f, 9f), 5).Verdict);  // across two shards
        Assert.Equal(ChunkVerdict.Misfit, x.Accept(Chunk(5, 2, 6, 9f), 5).Verdict);      // past the model
        // replica 1's gradient for our shard: nothing to send until replica 2's is in
        Assert.Empty(x.Accept(Chunk(5, 1, 0, 10f, 20f), 5).Outgoing);
        var (verdict, outgoing) = x.Accept(Chunk(5, 2, 0, 100f, 200f), 5);
        Assert.Equal(ChunkVerdict.Accepted, verdict);
        Assert.Equal([1, 2], outgoing.Select(o => o.Peer).Order());
        Assert.All(outgoing, o => Assert.Equal([(1f + 10f + 100f) / 3, (2f + 20f + 200f) / 3], o.Slice.Gradient.AsSpan(o.Slice.Offset, o.Slice.Count).ToArray()));
        Assert.Equal([0], x.Complete(5).Order());
        x.Accept(Chunk(5, 1, 2, 7f, 8f), 5);   // replica 1's mean of shard 1
        Assert.Equal([0, 1], x.Complete(5).Order());
        Assert.Null(x.TakeComplete(5));
        x.Accept(Chunk(5, 2, 4, 9f, 10f), 5);
        Assert.Equal([(1f + 10f + 100f) / 3, (2f + 20f + 200f) / 3, 7f, 8f, 9f, 10f], x.TakeComplete(5)!.TakeMean());
        Assert.Null(x.TakeComplete(5));   // forgotten once taken
    }

    [Fact]
    public void Taking_the_mean_uses_the_step_up_and_hands_the_chunks_arrays_back()
    {
        var pool = ExactPool<byte>.Shared;
        // three replicas of 4,503 values: shards of 1,501
        var x = new GradientExchange(3, 0, 4503, 1 << 18, p => $"r/student/{p}");
        x.Own(5, Random(1, 4503));
        // a length no other test uses: the pool's count for it is this test's
        var piece = Chunk(5, 1, 0, Random(2, 1501));
        var mean = Chunk(5, 1, 1501, Random(3, 1501));
        x.Accept(Chunk(5, 2, 0, Random(4, 1501)), 5);
        x.Accept(Chunk(5, 2, 3002, Random(5, 1501)), 5);
        Assert.Equal(ChunkVerdict.Accepted, x.Accept(mean, 5).Verdict);
        Assert.Same(mean.Values.Data, pool.Rent(1501 * 4));   // the mean's chunk is copied and handed back at once
        Assert.Equal(ChunkVerdict.Accepted, x.Accept(piece, 5).Verdict);
        var all = x.TakeComplete(5)!;
        Assert.Same(piece.Values.Data, pool.Rent(1501 * 4));  // the peer's gradient piece, once the step is reduced
        all.TakeMean();
        Assert.Contains("taken already", Assert.Throws<InvalidOperationException>(() => all.TakeMean()).Message);
    }

    [Fact]
    public void Pieces_that_leave_values_out_are_refused()
    {
        float[][] into = [new float[6]];
        IReadOnlyCollection<GradientPiece>[] gap = [[new GradientPiece(0, [1f, 2f, 3f, 4f, 5f, 6f], null)], [new GradientPiece(0, [1f, 2f], null), new GradientPiece(4, [5f, 6f], null)]];
        Assert.Contains("values 2-4 out", Assert.Throws<InvalidOperationException>(() => StepMean.Reduce(gap, into, 0, 6)).Message);
        IReadOnlyCollection<GradientPiece>[] shortOne = [[new GradientPiece(0, [1f, 2f, 3f, 4f, 5f, 6f], null)], [new GradientPiece(0, [1f, 2f, 3f], null)]];
        Assert.Contains("end at 3 of 6", Assert.Throws<InvalidOperationException>(() => StepMean.Reduce(shortOne, into, 0, 6)).Message);
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

    [Fact]
    public void The_mean_gradients_check_finds_the_first_value_that_is_not_finite_wherever_it_is()
    {
        // 1,003 values: whole vectors and a tail; huge finite values are finite (nothing overflows)
        var values = Enumerable.Repeat(float.MaxValue, 1003).ToArray();
        Assert.Null(StudentJobs.FirstNonFinite(values));
        Assert.Null(StudentJobs.FirstNonFinite([]));
        foreach (var at in new[] { 0, 7, 500, 1001, 1002 })
            foreach (var bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
            {
                var copy = (float[])values.Clone();
                copy[at] = bad;
                if (at < 1002) copy[1002] = float.NaN;   // a later one is not the first
                Assert.Equal(at, StudentJobs.FirstNonFinite(copy));
            }
    }
}
