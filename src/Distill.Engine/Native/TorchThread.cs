using System.Collections.Concurrent;
using System.Runtime;

namespace Distill.Engine.Native;

/// <summary>
/// The one thread on which a multi-threaded process (a cluster node) makes its TorchSharp calls,
/// with garbage collections held to the moments between its jobs.
///
/// Why the collections: TorchSharp 0.107 turns every number it passes to libtorch into a
/// finalizable <c>Scalar</c> (each <c>a + b</c> makes one for alpha = 1) and hands the native call
/// its raw handle, so while the call runs nothing keeps the managed object alive. A collection
/// started by another thread during the call may finalize it, and the finalizer frees the native
/// Scalar under libtorch's feet: "Expected false to be true" from Scalar::toFloat, "Unknown scalar
/// type", or a wrong value. The pipeline hit it every few hundred steps (actor threads allocate
/// messages and batches all the time); a single-threaded loop never does, because only the thread
/// that is in native code could start a collection. Here the process holds a no-GC region whose
/// budget covers what every thread allocates during a job, renewed (one blocking collection)
/// before a job once half of it is used, when no native call is under way. The compute thread's
/// own allocations may still end it mid-job, which is safe: it is then in managed code.
///
/// Why one thread: libtorch spreads each operation over every core already (an OpenMP team per
/// calling thread); engine calls from several threads oversubscribe the cores (the pipeline ran at
/// 0.42x the engine loop on pool threads).
/// </summary>
public sealed class TorchThread
{
    /// <summary>The process's compute thread (one per process: a no-GC region is process-wide).</summary>
    public static TorchThread Shared { get; } = new("engine-compute", 32L << 20);

    private readonly BlockingCollection<Action> work = new();
    private readonly long budget;
    private long regionStartAllocated;
    private bool regionsUnavailable;

    private TorchThread(string name, long budgetBytes)
    {
        budget = budgetBytes;
        new Thread(Loop) { IsBackground = true, Name = name }.Start();
    }

    /// <summary>No-GC regions opened (each one blocking collection between jobs).</summary>
    public long Renewals { get; private set; }

    /// <summary>Jobs during which a collection happened anyway (the budget ran out mid-job).</summary>
    public long CollectionsDuringJobs { get; private set; }

    private long busyTicks;

    /// <summary>Time spent in jobs so far (against wall time: how busy the engine is kept).</summary>
    public TimeSpan Busy => System.Diagnostics.Stopwatch.GetElapsedTime(0, Interlocked.Read(ref busyTicks));

    /// <summary>Bytes every thread together may allocate before a collection (the region's size).</summary>
    public long Budget => budget;

    private readonly ConcurrentDictionary<string, (long Count, long Ticks)> jobTimes = new();

    /// <summary>Jobs run so far and their time, by the type of what they answered (Made, Trained, ...).</summary>
    public IReadOnlyDictionary<string, (long Count, TimeSpan Time)> JobTimes =>
        jobTimes.ToDictionary(kv => kv.Key, kv => (kv.Value.Count, System.Diagnostics.Stopwatch.GetElapsedTime(0, kv.Value.Ticks)));

    /// <summary>Runs a job on the thread; the task completes with its result or its exception.</summary>
    public Task<T> Run<T>(Func<T> job)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        work.Add(() =>
        {
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            try
            {
                var result = job();
                var ticks = System.Diagnostics.Stopwatch.GetTimestamp() - started;
                jobTimes.AddOrUpdate(result?.GetType().Name ?? typeof(T).Name, (1, ticks), (_, o) => (o.Count + 1, o.Ticks + ticks));
                done.SetResult(result);
            }
            catch (Exception e) { done.SetException(e); }
        });
        return done.Task;
    }

    /// <summary>Queues a job whose outcome nobody waits for (disposal); ObjectDisposedException is ignored.</summary>
    public void Post(Action job) => work.Add(() =>
    {
        try { job(); }
        catch (ObjectDisposedException) { }
    });

    private void Loop()
    {
        foreach (var job in work.GetConsumingEnumerable())
        {
            EnsureQuietRegion();
            var collections = GC.CollectionCount(0);
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            job();
            busyTicks += System.Diagnostics.Stopwatch.GetTimestamp() - started;
            if (GC.CollectionCount(0) != collections) CollectionsDuringJobs++;
        }
    }

    private void EnsureQuietRegion()
    {
        if (regionsUnavailable) return;
        var inRegion = GCSettings.LatencyMode == GCLatencyMode.NoGCRegion;
        if (inRegion && GC.GetTotalAllocatedBytes() - regionStartAllocated < budget / 2) return;
        if (inRegion)
        {
            try { GC.EndNoGCRegion(); }
            catch (InvalidOperationException) { }   // a collection ended it already
        }
        try
        {
            if (GC.TryStartNoGCRegion(budget))
            {
                regionStartAllocated = GC.GetTotalAllocatedBytes();
                Renewals++;
            }
        }
        catch (Exception e) when (e is ArgumentOutOfRangeException or InvalidOperationException)
        {
            // a runtime that cannot reserve the budget: run without (as a single-threaded loop would)
            regionsUnavailable = true;
            Console.Error.WriteLine($"[torch] note: no no-GC region for the compute thread ({e.Message})");
        }
    }
}
