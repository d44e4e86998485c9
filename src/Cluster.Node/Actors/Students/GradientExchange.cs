using System.Numerics;
using System.Runtime.InteropServices;
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
    /// <summary>By step, then replica: the pieces received so far by chunk index (the chunks' own arrays, never copied).</summary>
    private readonly Dictionary<long, Dictionary<int, Dictionary<int, GradientPiece>>> pieces = [];
    private readonly Dictionary<long, Dictionary<int, int>> expected = [];

    public int Replicas => replicas;

    /// <summary>This replica's own gradient for `step`.</summary>
    public void Own(long step, float[] flat)
    {
        if (flat.Length != size) throw new ArgumentException($"a gradient of {flat.Length} values for a model of {size} parameters");
        Slot(step)[self] = new() { [0] = new GradientPiece(0, flat, null) };
        Expected(step)[self] = 1;
    }

    public float[]? OwnAt(long step) => pieces.TryGetValue(step, out var s) && s.TryGetValue(self, out var p) ? p[0].Floats : null;

    /// <summary>A peer's chunk for the replica's next step `nextStep` (or the one after, while our reduction runs).</summary>
    public ChunkVerdict Accept(GradientChunk c, long nextStep)
    {
        if (c.Step < nextStep || c.Step > nextStep + 1 || c.FromReplica == self || c.FromReplica < 0 || c.FromReplica >= replicas) return ChunkVerdict.Stale;
        var bytes = c.Values.Data;
        if (bytes.Length % 4 != 0 || c.Offset < 0 || c.Offset + bytes.Length / 4 > size || c.ChunkCount < 1 || c.ChunkIndex < 0 || c.ChunkIndex >= c.ChunkCount)
            return ChunkVerdict.Misfit;
        var slot = Slot(c.Step);
        if (!slot.TryGetValue(c.FromReplica, out var got)) slot[c.FromReplica] = got = [];
        got[c.ChunkIndex] = new GradientPiece(c.Offset, null, bytes);   // a chunk sent twice holds the same values
        Expected(c.Step)[c.FromReplica] = c.ChunkCount;
        return ChunkVerdict.Accepted;
    }

    /// <summary>The replicas whose whole gradient for `step` is in.</summary>
    public IReadOnlySet<int> Complete(long step) =>
        pieces.TryGetValue(step, out var slot) && expected.TryGetValue(step, out var n)
            ? slot.Where(kv => n.TryGetValue(kv.Key, out var count) && kv.Value.Count == count).Select(kv => kv.Key).ToHashSet() : [];

    /// <summary>Every replica's gradient for `step`, in replica order, once all are in (then forgotten); else null.</summary>
    public StepGradients? TakeComplete(long step)
    {
        if (Complete(step).Count != replicas) return null;
        var slot = pieces[step];
        pieces.Remove(step);
        expected.Remove(step);
        return new StepGradients(size, [.. Enumerable.Range(0, replicas).Select(r => (IReadOnlyCollection<GradientPiece>)slot[r].Values)]);
    }

    /// <summary>Forgets steps up to `step` (applied: chunks a peer sent twice).</summary>
    public void DropUpTo(long step)
    {
        foreach (var old in pieces.Keys.Where(k => k <= step).ToList()) pieces.Remove(old);
        foreach (var old in expected.Keys.Where(k => k <= step).ToList()) expected.Remove(old);
    }

    public void Clear()
    {
        pieces.Clear();
        expected.Clear();
    }

    /// <summary>The mean in a fixed order: replica 0 + 1 + ... in float32, then / N (whole gradients).</summary>
    public static float[] Mean(float[][] byReplica) =>
        new StepGradients(byReplica[0].Length, [.. byReplica.Select(g => (IReadOnlyCollection<GradientPiece>)[new GradientPiece(0, g, null)])]).Mean();

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

    private Dictionary<int, Dictionary<int, GradientPiece>> Slot(long step) => pieces.TryGetValue(step, out var d) ? d : pieces[step] = [];

    private Dictionary<int, int> Expected(long step) => expected.TryGetValue(step, out var d) ? d : expected[step] = [];
}

/// <summary>Values at an offset of a flat gradient: a replica's own array, or a received chunk's bytes read in place.</summary>
public readonly record struct GradientPiece(long Offset, float[]? Floats, byte[]? Bytes)
{
    public ReadOnlySpan<float> Values => Floats is { } f ? f : MemoryMarshal.Cast<byte, float>(Bytes);
}

/// <summary>A step's gradients from every replica, in replica order, as the pieces they came in.</summary>
public sealed class StepGradients(long size, IReadOnlyCollection<GradientPiece>[] byReplica)
{
    public int Replicas => byReplica.Length;

    /// <summary>Replica r's whole gradient (a copy).</summary>
    public float[] Of(int replica)
    {
        var flat = new float[size];
        foreach (var p in byReplica[replica]) p.Values.CopyTo(flat.AsSpan((int)p.Offset));
        return flat;
    }

    /// <summary>
    /// The mean: replica 0 copied in, 1, 2, ... added in float32, then / N, read straight from the
    /// pieces. Element by element, so the SIMD lanes give the bits the scalar loop gives (IEEE
    /// addition and division are exact per element) and every replica gets the same bits.
    /// </summary>
    public float[] Mean()
    {
        var sum = new float[size];
        foreach (var p in byReplica[0]) p.Values.CopyTo(sum.AsSpan((int)p.Offset));
        for (var r = 1; r < byReplica.Length; r++)
            foreach (var p in byReplica[r]) Add(sum.AsSpan((int)p.Offset, p.Values.Length), p.Values);
        Divide(sum, byReplica.Length);
        return sum;
    }

    private static void Add(Span<float> into, ReadOnlySpan<float> values)
    {
        var simd = into.Length - into.Length % Vector<float>.Count;
        var vi = MemoryMarshal.Cast<float, Vector<float>>(into[..simd]);
        var vv = MemoryMarshal.Cast<float, Vector<float>>(values[..simd]);
        for (var i = 0; i < vi.Length; i++) vi[i] += vv[i];
        for (var i = simd; i < into.Length; i++) into[i] += values[i];
    }

    private static void Divide(Span<float> sum, int n)
    {
        var simd = sum.Length - sum.Length % Vector<float>.Count;
        var v = MemoryMarshal.Cast<float, Vector<float>>(sum[..simd]);
        var d = new Vector<float>(n);
        for (var i = 0; i < v.Length; i++) v[i] /= d;
        for (var i = simd; i < sum.Length; i++) sum[i] /= n;
    }
}
