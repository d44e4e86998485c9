using System.Runtime;

namespace Distill.Engine.Native;

/// <summary>
/// Garbage collections held to the moments between TorchSharp calls, for the whole process.
///
/// Why: TorchSharp 0.107 turns every number it passes to libtorch into a finalizable
/// <c>Scalar</c> (each <c>a + b</c> makes one for alpha = 1, its optimisers several per parameter)
/// and hands the native call its raw handle, so while the call runs nothing keeps the managed
/// object alive. A collection started by another thread during the call may finalize it, and the
/// finalizer frees the native Scalar under libtorch's feet: "Expected false to be true" from
/// Scalar::toFloat, "Unknown scalar type", or a wrong value. The actor pipeline hit it every few
/// hundred steps (actor threads allocate messages and batches all the time), and so did the
/// engine's own loop in `run --engine`, where only the runtime's threads allocate beside it.
///
/// How: the thread that makes the calls takes a <see cref="Hold"/> around each job or step. The
/// process then holds a no-GC region whose budget covers what every thread allocates meanwhile,
/// renewed (one blocking collection) at the start of a hold once half of it is used, when that
/// thread is in managed code. The holder's own allocations may still end it mid-hold, which is
/// safe: it is then in managed code too. A no-GC region is process-wide, hence one class for all.
/// </summary>
public static class QuietCollections
{
    /// <summary>Bytes every thread together may allocate before a collection (the region's size).</summary>
    public const long Budget = 32L << 20;

    private static readonly object Gate = new();
    private static long regionStartAllocated, renewals, collectionsDuringHolds;
    private static bool unavailable;

    /// <summary>No-GC regions opened so far (each one blocking collection at the start of a hold).</summary>
    public static long Renewals => Interlocked.Read(ref renewals);

    /// <summary>Holds during which a collection happened anyway (the budget ran out mid-hold).</summary>
    public static long CollectionsDuringHolds => Interlocked.Read(ref collectionsDuringHolds);

    /// <summary>Renews the region if needed; disposing it counts a collection that happened meanwhile.</summary>
    public static HoldScope Hold()
    {
        Ensure();
        return new HoldScope(GC.CollectionCount(0), Renewals);
    }

    /// <summary>
    /// Counts a collection that happened during the hold other than the renewals' own (a hold
    /// inside another renews between its holder's native calls: one blocking collection each).
    /// </summary>
    public readonly struct HoldScope(int collections, long renewedBefore) : IDisposable
    {
        public void Dispose()
        {
            if (GC.CollectionCount(0) - collections > Renewals - renewedBefore) Interlocked.Increment(ref collectionsDuringHolds);
        }
    }

    private static void Ensure()
    {
        lock (Gate)
        {
            if (unavailable) return;
            var inRegion = GCSettings.LatencyMode == GCLatencyMode.NoGCRegion;
            if (inRegion && GC.GetTotalAllocatedBytes() - regionStartAllocated < Budget / 2) return;
            if (inRegion)
            {
                try { GC.EndNoGCRegion(); }
                catch (InvalidOperationException) { }   // a collection ended it already
            }
            try
            {
                if (GC.TryStartNoGCRegion(Budget))
                {
                    regionStartAllocated = GC.GetTotalAllocatedBytes();
                    Interlocked.Increment(ref renewals);
                }
            }
            catch (Exception e) when (e is ArgumentOutOfRangeException or InvalidOperationException)
            {
                // a runtime that cannot reserve the budget: run without
                unavailable = true;
                Console.Error.WriteLine($"[torch] note: no no-GC region for the engine's calls ({e.Message})");
            }
        }
    }
}
