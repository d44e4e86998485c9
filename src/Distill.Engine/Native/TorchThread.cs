using System.Collections.Concurrent;

namespace Distill.Engine.Native;

/// <summary>
/// The one thread on which a multi-threaded process (a cluster node) makes its TorchSharp calls,
/// each job under a <see cref="QuietCollections.Hold"/>, so that collections wait for the gaps
/// between jobs (why: <see cref="QuietCollections"/>).
///
/// Why one thread: libtorch spreads each operation over every core already (an OpenMP team per
/// calling thread); engine calls from several threads oversubscribe the cores (the pipeline ran at
/// 0.42x the engine loop on pool threads).
/// </summary>
public sealed class TorchThread
{
    /// <summary>The process's compute thread (one per process: a no-GC region is process-wide).</summary>
    public static TorchThread Shared { get; } = new("engine-compute");

    private readonly BlockingCollection<Action> work = new();

    private TorchThread(string name) => new Thread(Loop) { IsBackground = true, Name = name }.Start();

    private long busyTicks;

    /// <summary>Time spent in jobs so far (against wall time: how busy the engine is kept).</summary>
    public TimeSpan Busy => System.Diagnostics.Stopwatch.GetElapsedTime(0, Interlocked.Read(ref busyTicks));

    private readonly ConcurrentDictionary<string, (long Count, long Ticks)> jobTimes = new();

    /// <summary>Jobs run so far and their time, by the type of what they answered (Made, Trained, ...).</summary>
    public IReadOnlyDictionary<string, (long Count, TimeSpan Time)> JobTimes =>
        jobTimes.ToDictionary(kv => kv.Key, kv => (kv.Value.Count, System.Diagnostics.Stopwatch.GetElapsedTime(0, kv.Value.Ticks)));

    /// <summary>Runs a job on the thread; the task completes with its result or its exception.</summary>
    public Task<T> Run<T>(Func<T> job)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        Run(job, r => done.SetResult(r), e => done.SetException(e));
        return done.Task;
    }

    /// <summary>
    /// Runs a job on the thread and hands its result or its exception to a callback on the thread
    /// itself, which must be quick (an actor's Tell): a task's continuation would take a thread-pool
    /// worker's wake-up first, and on a machine whose cores the OpenMP team fills each wake-up
    /// preempts the next job (docs/benchmarks.md).
    /// </summary>
    public void Run<T>(Func<T> job, Action<T> done, Action<Exception> failed) => work.Add(() =>
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        T result;
        try { result = job(); }
        catch (Exception e) { Hand(() => failed(e)); return; }
        var ticks = System.Diagnostics.Stopwatch.GetTimestamp() - started;
        jobTimes.AddOrUpdate(result?.GetType().Name ?? typeof(T).Name, (1, ticks), (_, o) => (o.Count + 1, o.Ticks + ticks));
        Hand(() => done(result));
    });

    // a callback that throws is a bug in its caller; it must not end the thread every job runs on
    private static void Hand(Action callback)
    {
        try { callback(); }
        catch (Exception e) { Console.Error.WriteLine($"[engine-compute] a job's callback failed: {e}"); }
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
            using var hold = QuietCollections.Hold();
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            job();
            busyTicks += System.Diagnostics.Stopwatch.GetTimestamp() - started;
        }
    }
}
