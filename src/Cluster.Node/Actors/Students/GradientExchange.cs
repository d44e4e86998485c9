using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;

namespace Cluster.Node.Actors;

/// <summary>How a gradient chunk was taken.</summary>
public enum ChunkVerdict
{
    Accepted,
    /// <summary>A late duplicate of a step already applied, or one from a peer about to roll back.</summary>
    Stale,
    /// <summary>It does not fit the model: the peer runs another model, and the run must fail.</summary>
    Misfit,
}

/// <summary>
/// The all-reduce the student replicas run (and `bench --cluster` measures): each replica sends
/// its flat gradient to every peer in chunks, chunks arrive in any order and may come twice (a
/// peer resends after a failover), and a step is reduced once every replica's every chunk is in,
/// summed in replica order in float32 and divided by N, so that every replica computes the same
/// bits. Not thread-safe: one owner, its mailbox.
/// </summary>
public sealed class GradientExchange(int replicas, int self, long size)
{
    private readonly Dictionary<long, Dictionary<int, float[]>> gradients = [];
    private readonly Dictionary<long, Dictionary<int, (HashSet<int> Received, int Expected)>> seen = [];

    public int Replicas => replicas;

    /// <summary>This replica's own gradient for `step`.</summary>
    public void Own(long step, float[] flat)
    {
        if (flat.Length != size) throw new ArgumentException($"a gradient of {flat.Length} values for a model of {size} parameters");
        Slot(step)[self] = flat;
        Progress(step)[self] = ([0], 1);
    }

    public float[]? OwnAt(long step) => gradients.TryGetValue(step, out var s) && s.TryGetValue(self, out var g) ? g : null;

    /// <summary>A peer's chunk for the replica's next step `nextStep` (or the one after, while our reduction runs).</summary>
    public ChunkVerdict Accept(GradientChunk c, long nextStep)
    {
        if (c.Step < nextStep || c.Step > nextStep + 1 || c.FromReplica == self || c.FromReplica < 0 || c.FromReplica >= replicas) return ChunkVerdict.Stale;
        var values = c.Values.Data.Length / 4;
        if (c.Offset < 0 || c.Offset + values > size || c.ChunkCount < 1 || c.ChunkIndex < 0 || c.ChunkIndex >= c.ChunkCount) return ChunkVerdict.Misfit;
        var slot = Slot(c.Step);
        if (!slot.TryGetValue(c.FromReplica, out var flat)) slot[c.FromReplica] = flat = new float[size];
        Buffer.BlockCopy(c.Values.Data, 0, flat, (int)c.Offset * 4, c.Values.Data.Length);
        var p = Progress(c.Step);
        if (!p.TryGetValue(c.FromReplica, out var s)) p[c.FromReplica] = s = ([], c.ChunkCount);
        s.Received.Add(c.ChunkIndex);
        return ChunkVerdict.Accepted;
    }

    /// <summary>The replicas whose whole gradient for `step` is in.</summary>
    public IReadOnlySet<int> Complete(long step) =>
        seen.TryGetValue(step, out var p) ? p.Where(kv => kv.Value.Received.Count == kv.Value.Expected).Select(kv => kv.Key).ToHashSet() : [];

    /// <summary>Every replica's gradient for `step`, in replica order, once all are in (then forgotten); else null.</summary>
    public float[][]? TakeComplete(long step)
    {
        if (Complete(step).Count != replicas) return null;
        var slot = gradients[step];
        gradients.Remove(step);
        seen.Remove(step);
        return Enumerable.Range(0, replicas).Select(r => slot[r]).ToArray();
    }

    /// <summary>Forgets steps up to `step` (applied: chunks a peer sent twice).</summary>
    public void DropUpTo(long step)
    {
        foreach (var old in gradients.Keys.Where(k => k <= step).ToList()) { gradients.Remove(old); seen.Remove(old); }
        foreach (var old in seen.Keys.Where(k => k <= step).ToList()) seen.Remove(old);
    }

    public void Clear()
    {
        gradients.Clear();
        seen.Clear();
    }

    /// <summary>
    /// The mean in a fixed order: replica 0 + 1 + ... in float32, then / N. Element by element, so
    /// the SIMD lanes give the bits the scalar loop gives (IEEE addition and division are exact per element).
    /// </summary>
    public static float[] Mean(float[][] byReplica)
    {
        var sum = (float[])byReplica[0].Clone();
        var lanes = System.Numerics.Vector<float>.Count;
        var simd = sum.Length - sum.Length % lanes;
        for (var r = 1; r < byReplica.Length; r++)
        {
            var g = byReplica[r];
            var vs = System.Runtime.InteropServices.MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(sum.AsSpan(0, simd));
            var vg = System.Runtime.InteropServices.MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(g.AsSpan(0, simd));
            for (var i = 0; i < vs.Length; i++) vs[i] += vg[i];
            for (var i = simd; i < sum.Length; i++) sum[i] += g[i];
        }
        var n = new System.Numerics.Vector<float>(byReplica.Length);
        var v = System.Runtime.InteropServices.MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(sum.AsSpan(0, simd));
        for (var i = 0; i < v.Length; i++) v[i] /= n;
        for (var i = simd; i < sum.Length; i++) sum[i] /= byReplica.Length;
        return sum;
    }

    /// <summary>`flat` as the chunks of at most `chunk` values one peer receives.</summary>
    public static IEnumerable<GradientChunk> Chunks(string toEntity, long step, int fromReplica, float[] flat, long chunk)
    {
        var count = (int)((flat.Length + chunk - 1) / chunk);
        for (var c = 0; c < count; c++)
        {
            var offset = (long)c * chunk;
            var len = (int)Math.Min(chunk, flat.Length - offset);
            var bytes = new byte[len * 4];
            Buffer.BlockCopy(flat, (int)offset * 4, bytes, 0, bytes.Length);
            yield return new GradientChunk(toEntity, step, fromReplica, c, count, offset, new TensorPayload([len], WireDType.Float32, bytes));
        }
    }

    private Dictionary<int, float[]> Slot(long step) => gradients.TryGetValue(step, out var d) ? d : gradients[step] = [];

    private Dictionary<int, (HashSet<int> Received, int Expected)> Progress(long step) => seen.TryGetValue(step, out var d) ? d : seen[step] = [];
}
