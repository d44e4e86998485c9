using System.Numerics;
using System.Runtime.InteropServices;
using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;
using Cluster.Node.Transport;

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
/// bits. A chunk's range is reduced as soon as every replica's values for it are in (the replicas
/// chunk alike), while the rest is still on the wire; ranges that do not line up are reduced at the
/// end. Not thread-safe: one owner, its mailbox.
/// </summary>
public sealed class GradientExchange(int replicas, int self, long size)
{
    private readonly Dictionary<long, StepSlot> steps = [];

    public int Replicas => replicas;

    /// <summary>This replica's own gradient for `step`.</summary>
    public void Own(long step, float[] flat)
    {
        if (flat.Length != size) throw new ArgumentException($"a gradient of {flat.Length} values for a model of {size} parameters");
        var slot = Slot(step);
        slot.Pieces[self] = new() { [0] = new GradientPiece(0, flat, null) };
        slot.Expected[self] = 1;
        if (replicas > 1 && slot.Pieces.TryGetValue((self + 1) % replicas, out var peer))
            foreach (var index in peer.Keys.ToList()) ReduceEarly(slot, index);
    }

    public float[]? OwnAt(long step) => steps.TryGetValue(step, out var s) && s.Pieces.TryGetValue(self, out var p) ? p[0].Floats : null;

    /// <summary>A peer's chunk for the replica's next step `nextStep` (or the one after, while our reduction runs).</summary>
    public ChunkVerdict Accept(GradientChunk c, long nextStep)
    {
        if (c.Step < nextStep || c.Step > nextStep + 1 || c.FromReplica == self || c.FromReplica < 0 || c.FromReplica >= replicas) return ChunkVerdict.Stale;
        var bytes = c.Values.Data;
        if (bytes.Length % 4 != 0 || c.Offset < 0 || c.Offset + bytes.Length / 4 > size || c.ChunkCount < 1 || c.ChunkIndex < 0 || c.ChunkIndex >= c.ChunkCount)
            return ChunkVerdict.Misfit;
        var slot = Slot(c.Step);
        if (!slot.Pieces.TryGetValue(c.FromReplica, out var got)) slot.Pieces[c.FromReplica] = got = [];
        got[c.ChunkIndex] = new GradientPiece(c.Offset, null, bytes);   // a chunk sent twice holds the same values
        slot.Expected[c.FromReplica] = c.ChunkCount;
        ReduceEarly(slot, c.ChunkIndex);
        return ChunkVerdict.Accepted;
    }

    /// <summary>The replicas whose whole gradient for `step` is in.</summary>
    public IReadOnlySet<int> Complete(long step) =>
        steps.TryGetValue(step, out var slot)
            ? slot.Pieces.Where(kv => slot.Expected.TryGetValue(kv.Key, out var count) && kv.Value.Count == count).Select(kv => kv.Key).ToHashSet() : [];

    /// <summary>Every replica's gradient for `step`, in replica order, once all are in (then forgotten); else null.</summary>
    public StepGradients? TakeComplete(long step)
    {
        if (Complete(step).Count != replicas) return null;
        var slot = steps[step];
        steps.Remove(step);
        return new StepGradients(size, [.. Enumerable.Range(0, replicas).Select(r => (IReadOnlyCollection<GradientPiece>)slot.Pieces[r].Values)],
            slot.Sum, slot.Reduced);
    }

    /// <summary>Forgets steps up to `step` (applied: chunks a peer sent twice).</summary>
    public void DropUpTo(long step)
    {
        foreach (var old in steps.Keys.Where(k => k <= step).ToList()) Forget(old);
    }

    public void Clear()
    {
        foreach (var old in steps.Keys.ToList()) Forget(old);
    }

    private void Forget(long step)
    {
        // the partial sum was never handed out
        if (steps.Remove(step, out var slot) && slot.Sum is { } sum) ExactPool<float>.Shared.Return(sum);
    }

    /// <summary>
    /// Reduces chunk `index`'s range into the step's sum once every replica's values for it are in:
    /// every peer's chunk of that index covers the same range, and this replica's own gradient is in.
    /// </summary>
    private void ReduceEarly(StepSlot slot, int index)
    {
        if (!slot.Pieces.ContainsKey(self)) return;
        long from = -1, length = -1;
        for (var r = 0; r < replicas; r++)
        {
            if (r == self) continue;
            if (!slot.Pieces.TryGetValue(r, out var got) || !got.TryGetValue(index, out var piece)) return;
            if (from < 0) (from, length) = (piece.Offset, piece.Values.Length);
            else if (piece.Offset != from || piece.Values.Length != length) return;   // chunked differently: reduced at the end
        }
        if (length <= 0 || !slot.Reduced.Add((from, from + length))) return;
        slot.Sum ??= ExactPool<float>.Shared.Rent((int)size);
        // the range's own piece for each replica: this one's whole gradient, the peers' chunk `index`
        StepGradients.Reduce([.. Enumerable.Range(0, replicas).Select(r => (IReadOnlyCollection<GradientPiece>)[slot.Pieces[r][r == self ? 0 : index]])],
            slot.Sum, from, from + length);
    }

    /// <summary>The mean in a fixed order: replica 0 + 1 + ... in float32, then / N (whole gradients).</summary>
    public static float[] Mean(float[][] byReplica) =>
        new StepGradients(byReplica[0].Length, [.. byReplica.Select(g => (IReadOnlyCollection<GradientPiece>)[new GradientPiece(0, g, null)])]).Mean();

    /// <summary>`flat` as the chunks of at most `chunk` values one peer receives, each a message of its own (through Akka).</summary>
    public static IEnumerable<GradientChunk> Chunks(string toEntity, long step, int fromReplica, float[] flat, long chunk) =>
        GradientSlice.Of(toEntity, step, fromReplica, flat, chunk).Select(s => s.ToChunk());

    private StepSlot Slot(long step) => steps.TryGetValue(step, out var s) ? s : steps[step] = new StepSlot();

    /// <summary>A step's pieces by replica and chunk index, how many chunks each replica sends, and what is reduced already.</summary>
    private sealed class StepSlot
    {
        public readonly Dictionary<int, Dictionary<int, GradientPiece>> Pieces = [];
        public readonly Dictionary<int, int> Expected = [];
        public readonly HashSet<(long From, long To)> Reduced = [];
        public float[]? Sum;
    }
}

/// <summary>Values at an offset of a flat gradient: a replica's own array, or a received chunk's bytes read in place.</summary>
public readonly record struct GradientPiece(long Offset, float[]? Floats, byte[]? Bytes)
{
    public ReadOnlySpan<float> Values => Floats is { } f ? f : MemoryMarshal.Cast<byte, float>(Bytes);
}

/// <summary>
/// A step's gradients from every replica, in replica order, as the pieces they came in, and the
/// ranges of the mean the exchange reduced already (into `sum`, an <see cref="ExactPool{T}"/> array).
/// </summary>
public sealed class StepGradients(long size, IReadOnlyCollection<GradientPiece>[] byReplica, float[]? sum = null, IReadOnlySet<(long From, long To)>? reduced = null)
{
    private bool taken;

    private void ThrowIfTaken()
    {
        if (taken) throw new InvalidOperationException("this step's gradients were taken already");
    }

    public int Replicas => byReplica.Length;

    /// <summary>Replica r's whole gradient (a copy).</summary>
    public float[] Of(int replica)
    {
        ThrowIfTaken();
        var flat = new float[size];
        foreach (var p in byReplica[replica]) p.Values.CopyTo(flat.AsSpan((int)p.Offset));
        return flat;
    }

    /// <summary>
    /// The mean: for each element ((g0 + g1) + g2 ...) / N in float32, read straight from the
    /// pieces (a fresh array; nothing reduced early is used). Element by element, so the SIMD lanes
    /// give the scalar bits (IEEE addition and division are exact per element) and every replica
    /// gets the same bits, whichever ranges were reduced early.
    /// </summary>
    public float[] Mean()
    {
        ThrowIfTaken();
        var mean = GC.AllocateUninitializedArray<float>((int)size);
        Reduce(byReplica, mean, 0, size);
        return mean;
    }

    /// <summary>
    /// The mean in an <see cref="ExactPool{T}"/> array (the caller returns it once applied): the
    /// ranges reduced early, and the rest reduced now. The received chunks' bytes go back to the
    /// pool: the step's gradients are used up.
    /// </summary>
    public float[] TakeMean()
    {
        ThrowIfTaken();
        var mean = sum ?? ExactPool<float>.Shared.Rent((int)size);
        long at = 0;
        foreach (var (from, to) in (reduced ?? new HashSet<(long, long)>()).Order())
        {
            if (from > at) Reduce(byReplica, mean, at, from);
            at = Math.Max(at, to);
        }
        if (at < size) Reduce(byReplica, mean, at, size);
        taken = true;
        // a chunk's bytes belong to that chunk alone (the data plane or the codec made them for it)
        foreach (var pieces in byReplica)
            foreach (var p in pieces)
                if (p.Bytes is { } b) ExactPool<byte>.Shared.Return(b);
        return mean;
    }

    /// <summary>
    /// Writes the mean of values [from, to) into `into`, block by block, each block within one piece
    /// of every replica (pieces start at different offsets: a replica's own gradient is one piece),
    /// so a block stays in L1 between the replicas' additions and memory is read once.
    /// </summary>
    internal static void Reduce(IReadOnlyCollection<GradientPiece>[] byReplica, float[] into, long from, long to)
    {
        var n = byReplica.Length;
        var sorted = byReplica.Select(ps => ps.Where(p => p.Offset < to && p.Offset + p.Values.Length > from).OrderBy(p => p.Offset).ToArray()).ToArray();
        foreach (var ps in sorted) Covers(ps, from, to);
        var at = new int[n];
        var starts = new int[n];
        for (var start = from; start < to;)
        {
            var end = Math.Min(to, start + Block);
            for (var r = 0; r < n; r++)
            {
                while (sorted[r][at[r]].Offset + sorted[r][at[r]].Values.Length <= start) at[r]++;
                var p = sorted[r][at[r]];
                end = Math.Min(end, p.Offset + p.Values.Length);
                starts[r] = (int)(start - p.Offset);
            }
            var block = into.AsSpan((int)start, (int)(end - start));
            var first = sorted[0][at[0]].Values.Slice(starts[0], block.Length);
            if (n == 1) first.CopyTo(block);   // x / 1 is x
            else
            {
                // one pass per added replica, the division fused into the last (two replicas: one pass)
                Sum(block, first, sorted[1][at[1]].Values.Slice(starts[1], block.Length), n == 2 ? n : 1);
                for (var r = 2; r < n; r++) Sum(block, block, sorted[r][at[r]].Values.Slice(starts[r], block.Length), r == n - 1 ? n : 1);
            }
            start = end;
        }
    }

    /// <summary>Values reduced per block: a block stays in L1 between the replicas' additions.</summary>
    private const int Block = 4096;

    /// <summary>Pieces that cover [from, to) without gaps (overlaps hold the same values: a chunk sent twice).</summary>
    private static void Covers(GradientPiece[] ps, long from, long to)
    {
        var end = from;
        foreach (var p in ps)
        {
            if (p.Offset > end) throw new InvalidOperationException($"gradient pieces leave values {end}-{p.Offset} out");
            end = Math.Max(end, p.Offset + p.Values.Length);
        }
        if (end < to) throw new InvalidOperationException($"gradient pieces end at {end} of {to} values");
    }

    /// <summary>into = (a + b) / divisor, element by element (a may be into itself); a divisor of 1 divides nothing.</summary>
    private static void Sum(Span<float> into, ReadOnlySpan<float> a, ReadOnlySpan<float> b, int divisor)
    {
        var simd = into.Length - into.Length % Vector<float>.Count;
        var vi = MemoryMarshal.Cast<float, Vector<float>>(into[..simd]);
        var va = MemoryMarshal.Cast<float, Vector<float>>(a[..simd]);
        var vb = MemoryMarshal.Cast<float, Vector<float>>(b[..simd]);
        if (divisor == 1)
        {
            for (var i = 0; i < vi.Length; i++) vi[i] = va[i] + vb[i];
            for (var i = simd; i < into.Length; i++) into[i] = a[i] + b[i];
            return;
        }
        var d = new Vector<float>(divisor);
        for (var i = 0; i < vi.Length; i++) vi[i] = (va[i] + vb[i]) / d;
        for (var i = simd; i < into.Length; i++) into[i] = (a[i] + b[i]) / divisor;
    }
}
