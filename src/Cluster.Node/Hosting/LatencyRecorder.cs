namespace Cluster.Node.Hosting;

/// <summary>The last N durations of something a node does (the sweep coordinator's decisions), for percentiles; thread-safe.</summary>
public sealed class LatencyRecorder(int capacity)
{
    private readonly double[] ring = new double[capacity];
    private long count;

    public long Count => Interlocked.Read(ref count);

    public void Record(TimeSpan t)
    {
        lock (ring) ring[count++ % ring.Length] = t.TotalMilliseconds;
    }

    /// <summary>The q-quantile in milliseconds of the durations kept (nearest rank); NaN when there are none.</summary>
    public double Percentile(double q)
    {
        double[] kept;
        lock (ring) kept = ring[..(int)Math.Min(count, ring.Length)];
        if (kept.Length == 0) return double.NaN;
        Array.Sort(kept);
        return kept[Math.Clamp((int)Math.Ceiling(q * kept.Length) - 1, 0, kept.Length - 1)];
    }
}
