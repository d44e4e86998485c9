namespace Cluster.Node.Transport;

/// <summary>
/// Lets through at most `burst` of a kind of event (a log line) per interval; the rest are counted,
/// and the count goes with the next one let through, so a flood of them costs a few lines per
/// interval instead of one each.
/// </summary>
public sealed class Throttle(TimeSpan interval, int burst)
{
    private readonly object gate = new();
    private long windowEnds = long.MinValue;
    private int used;
    private long suppressed;

    public TimeSpan Interval => interval;

    /// <summary>Whether to let this one through; `suppressedSince` is how many were held back before it.</summary>
    public bool Allow(out long suppressedSince)
    {
        var now = Environment.TickCount64;
        lock (gate)
        {
            if (now >= windowEnds) (windowEnds, used) = (now + (long)interval.TotalMilliseconds, 0);
            if (used >= burst)
            {
                suppressed++;
                suppressedSince = 0;
                return false;
            }
            used++;
            suppressedSince = suppressed;
            suppressed = 0;
            return true;
        }
    }
}
