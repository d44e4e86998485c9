using System.Numerics;
using System.Runtime.InteropServices;

namespace Cluster.Node.Actors;

/// <summary>Values at an offset of a flat gradient: a replica's own array, or a received chunk's bytes read in place.</summary>
public readonly record struct GradientPiece(long Offset, float[]? Floats, byte[]? Bytes)
{
    public ReadOnlySpan<float> Values => Floats is { } f ? f : MemoryMarshal.Cast<byte, float>(Bytes);
}

/// <summary>A step's mean gradient, in an <see cref="ExactPool{T}"/> array that the caller returns once applied.</summary>
public sealed class StepMean(float[] sum)
{
    private bool taken;

    public float[] TakeMean()
    {
        if (taken) throw new InvalidOperationException("this step's mean was taken already");
        taken = true;
        return sum;
    }

    /// <summary>
    /// Writes the mean of values [from, to) into each of `into` (which may be one of the replicas'
    /// own arrays), block by block, each block within one piece of every replica, summed in a
    /// scratch block that stays in L1 between the replicas' additions, so memory is read once.
    /// Element by element in replica order, so the SIMD lanes give the scalar bits (IEEE addition
    /// and division are exact per element).
    /// </summary>
    internal static void Reduce(IReadOnlyCollection<GradientPiece>[] byReplica, float[][] into, long from, long to)
    {
        var n = byReplica.Length;
        var sorted = byReplica.Select(ps => ps.Where(p => p.Offset < to && p.Offset + p.Values.Length > from).OrderBy(p => p.Offset).ToArray()).ToArray();
        foreach (var ps in sorted) Covers(ps, from, to);
        var at = new int[n];
        var starts = new int[n];
        Span<float> scratch = stackalloc float[Block];
        // one target that no replica reads from: summed in place, with no copy out of the scratch block
        var inPlace = into.Length == 1 && !byReplica.Any(ps => ps.Any(p => ReferenceEquals(p.Floats, into[0])));
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
            var block = inPlace ? into[0].AsSpan((int)start, (int)(end - start)) : scratch[..(int)(end - start)];
            var first = sorted[0][at[0]].Values.Slice(starts[0], block.Length);
            if (n == 1) first.CopyTo(block);   // x / 1 is x
            else
            {
                // one pass per added replica, the division fused into the last (two replicas: one pass)
                Sum(block, first, sorted[1][at[1]].Values.Slice(starts[1], block.Length), n == 2 ? n : 1);
                for (var r = 2; r < n; r++) Sum(block, block, sorted[r][at[r]].Values.Slice(starts[r], block.Length), r == n - 1 ? n : 1);
            }
            if (!inPlace)
                foreach (var target in into) block.CopyTo(target.AsSpan((int)start));
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
