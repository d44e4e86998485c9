using Distill.Engine.Native;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// TorchSharp frees a Scalar it passed to libtorch if a collection finalizes it mid-call; with a
/// thread allocating beside the engine this failed within seconds (docs/engineering-notes.md).
/// Collections wait for the gaps between compute jobs and between the engine loop's steps
/// (<see cref="QuietCollections"/>). Runs alone (the "mnist" collection), so no other test's
/// allocations count against the region, and with the machine to itself (trait Host=quiet): its
/// allocator works at a rate per second, so a job slowed by other processes would see more of it.
/// </summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Quiet)]
public sealed class TorchThreadTests
{
    /// <summary>Garbage at `bytesPerSecond`, like actor threads receiving batches, until disposed.</summary>
    private sealed class Allocator : IDisposable
    {
        private readonly Thread thread;
        private int stop;
        private long allocated;

        public Allocator(long bytesPerSecond)
        {
            thread = new Thread(() =>
            {
                var keep = new byte[32][];
                var clock = System.Diagnostics.Stopwatch.StartNew();
                for (var i = 0; Volatile.Read(ref stop) == 0; i++)
                {
                    keep[i % keep.Length] = new byte[200_000];
                    var total = Interlocked.Add(ref allocated, 200_000);
                    var ahead = total / (double)bytesPerSecond - clock.Elapsed.TotalSeconds;
                    if (ahead > 0.002) Thread.Sleep(TimeSpan.FromSeconds(ahead));
                }
            });
            thread.Start();
        }

        public long Allocated => Interlocked.Read(ref allocated);

        public void Dispose()
        {
            Volatile.Write(ref stop, 1);
            thread.Join();
        }
    }

    [Fact]
    public async Task Collections_started_by_other_threads_wait_for_the_gaps_between_torch_jobs()
    {
        Torch.Init();
        var t = TorchThread.Shared;
        // one job first, without the allocator: a fresh test host compiles the calls during it, far
        // longer than a job takes, and that is not what is measured
        static (float, float) Job()
        {
            using var scope = NewDisposeScope();
            var b = ones(1 << 20);
            var a = zeros(1 << 20);
            for (var k = 0; k < 10; k++)
            {
                a = a + b;                           // an implicit Scalar (alpha = 1) per call
                a.addcdiv_(b, b, value: 0.5);        // and one for value
            }
            return (a.min().item<float>(), a.max().item<float>());
        }
        await t.Run(Job);
        var (renewals, during) = (QuietCollections.Renewals, QuietCollections.CollectionsDuringHolds);
        // ~200 MB/s: without the region this starts a collection every few milliseconds, nearly
        // all while a job is in native code
        var jobs = 0;
        using (var allocator = new Allocator(200L << 20))
        {
            var deadline = DateTime.UtcNow.AddSeconds(90);
            // until the allocator has passed the budget twice and the region has had the chance to be
            // renewed at job boundaries (a slow job can straddle both budgets: then it takes more jobs)
            while ((allocator.Allocated < 2.5 * QuietCollections.Budget || QuietCollections.Renewals - renewals < 2) && DateTime.UtcNow < deadline)
            {
                var value = await t.Run(Job);
                Assert.Equal((15f, 15f), value);
                jobs++;
            }
            Assert.True(allocator.Allocated >= 2.5 * QuietCollections.Budget, $"the allocator reached only {allocator.Allocated >> 20} MiB in {jobs} jobs");
        }
        Assert.Equal(0, QuietCollections.CollectionsDuringHolds - during);
        Assert.True(QuietCollections.Renewals - renewals >= 2, $"the region was renewed {QuietCollections.Renewals - renewals} times");
    }

    /// <summary>
    /// The engine's own loop (`run --engine`, the teacher's training) on the calling thread: its
    /// steps and evaluations hold collections off too. Without that, `run --engine` of the DAFL
    /// failover spec died in DaflGenerator's leaky_relu ("Expected false to be true" from toFloat).
    /// </summary>
    [Fact]
    public void Collections_started_by_other_threads_wait_for_the_gaps_between_engine_steps()
    {
        Torch.Init();
        var root = Path.Combine(Path.GetTempPath(), $"cd-quiet-{Guid.NewGuid():N}");
        var spec = SpecParser.Parse(Cluster.ActorHarness.Spec("quiet", steps: 60, evalEvery: 20), "quiet.yaml");
        // a short run first: a fresh test host compiles the loop's code on its first steps, between
        // holds, and that is not what is measured
        new Runner(new RunnerOptions { RunsRoot = root, RunId = "warm" }, TextWriter.Null).Run(SpecParser.Parse(Cluster.ActorHarness.Spec("warm", steps: 4, evalEvery: 2), "warm.yaml"));
        var (renewals, during) = (QuietCollections.Renewals, QuietCollections.CollectionsDuringHolds);
        long allocated;
        // the longest time without a no-GC region once the run's first one opened: the region, renewed at
        // every step, must cover the whole run (without the steps' holds it lapsed for ~180 ms at a time here)
        var longestGap = TimeSpan.Zero;
        var done = 0;
        var sampler = new Thread(() =>
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            TimeSpan? since = null;
            var seen = false;
            while (Volatile.Read(ref done) == 0)
            {
                var held = System.Runtime.GCSettings.LatencyMode == System.Runtime.GCLatencyMode.NoGCRegion;
                seen |= held && QuietCollections.Renewals > renewals;   // the run's own first region (an earlier test's may linger)
                if (held) since = null;
                else if (seen && since is null) since = clock.Elapsed;
                else if (since is { } t && clock.Elapsed - t > longestGap) longestGap = clock.Elapsed - t;
                Thread.Sleep(1);
            }
        });
        try
        {
            // 60 MB/s: the region lapses within about half a second unless it is renewed; a step, or a
            // batch of an evaluation, stays well within the half of it a hold may use
            using (var allocator = new Allocator(60L << 20))
            {
                sampler.Start();
                var result = new Runner(new RunnerOptions { RunsRoot = root, RunId = "quiet" }, TextWriter.Null).Run(spec);
                Volatile.Write(ref done, 1);
                sampler.Join();
                Assert.Equal(60, result.Steps);
                allocated = allocator.Allocated;
            }
        }
        finally
        {
            try { Directory.Delete(root, true); } catch (IOException) { }
        }
        Assert.True(allocated >= QuietCollections.Budget, $"the allocator reached only {allocated >> 20} MiB during the run");
        Assert.Equal(0, QuietCollections.CollectionsDuringHolds - during);
        Assert.True(QuietCollections.Renewals - renewals >= 2, $"the region was renewed {QuietCollections.Renewals - renewals} times for {allocated >> 20} MiB allocated");
        Assert.True(longestGap < TimeSpan.FromMilliseconds(50), $"the run went {longestGap.TotalMilliseconds:F0} ms without a no-GC region");
    }
    /// <summary>
    /// Entities get their jobs' results from the compute thread itself (EngineAccess.Compute with an
    /// actor), with no thread-pool hop: the callback runs on that thread, a job's exception goes to
    /// the failure callback, and a callback that throws does not end the thread every job runs on.
    /// </summary>
    [Fact]
    public async Task Callbacks_run_on_the_compute_thread_and_a_failing_one_does_not_stop_it()
    {
        var t = TorchThread.Shared;
        var got = new TaskCompletionSource<(int Value, string? Thread)>();
        t.Run(() => 6 * 7, r => got.SetResult((r, Thread.CurrentThread.Name)), e => got.SetException(e));
        Assert.Equal((42, "engine-compute"), await got.Task.WaitAsync(TimeSpan.FromSeconds(30)));

        var failed = new TaskCompletionSource<Exception>();
        t.Run<int>(() => throw new InvalidOperationException("shape [3] against [4]"), _ => failed.SetResult(new Exception("no failure")), e => failed.SetResult(e));
        var e = await failed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.IsType<InvalidOperationException>(e);
        Assert.Equal("shape [3] against [4]", e.Message);

        t.Run(() => 1, _ => throw new InvalidOperationException("a buggy callback"), _ => { });
        Assert.Equal(5, await t.Run(() => 2 + 3).WaitAsync(TimeSpan.FromSeconds(30)));
    }
}
