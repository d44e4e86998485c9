using Distill.Engine.Native;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// TorchSharp frees a Scalar it passed to libtorch if a collection finalizes it mid-call; with a
/// thread allocating beside the engine this failed within seconds (docs/engineering-notes.md).
/// On the TorchThread collections wait for the gaps between jobs. Runs alone (the "mnist"
/// collection), so no other test's allocations count against the region.
/// </summary>
[Collection("mnist")]
public sealed class TorchThreadTests
{
    [Fact]
    public async Task Collections_started_by_other_threads_wait_for_the_gaps_between_torch_jobs()
    {
        Torch.Init();
        var t = TorchThread.Shared;
        var (renewals, during) = (t.Renewals, t.CollectionsDuringJobs);
        var stop = 0;
        long allocated = 0;
        // ~200 MB/s of garbage, like actor threads receiving batches: without the region this
        // starts a collection every few milliseconds, nearly all while a job is in native code
        var allocator = new Thread(() =>
        {
            var keep = new byte[32][];
            for (var i = 0; Volatile.Read(ref stop) == 0; i++)
            {
                keep[i % keep.Length] = new byte[200_000];
                Interlocked.Add(ref allocated, 200_000);
                if (i % 4 == 3) Thread.Sleep(4);
            }
        });
        allocator.Start();
        var jobs = 0;
        try
        {
            var deadline = DateTime.UtcNow.AddSeconds(90);
            while (Interlocked.Read(ref allocated) < 2.5 * t.Budget && DateTime.UtcNow < deadline)
            {
                var value = await t.Run(() =>
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
                });
                Assert.Equal((15f, 15f), value);
                jobs++;
            }
        }
        finally
        {
            Volatile.Write(ref stop, 1);
            allocator.Join();
        }
        Assert.True(Interlocked.Read(ref allocated) >= 2.5 * t.Budget, $"the allocator reached only {allocated >> 20} MiB in {jobs} jobs");
        Assert.Equal(0, t.CollectionsDuringJobs - during);
        Assert.True(t.Renewals - renewals >= 2, $"the region was renewed {t.Renewals - renewals} times for {allocated >> 20} MiB allocated");
    }
}
