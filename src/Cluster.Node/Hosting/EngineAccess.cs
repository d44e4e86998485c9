using Distill.Engine.Models;
using Distill.Engine.Native;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Cluster.Node.Hosting;

/// <summary>
/// How entities build engine objects. Model initialisation draws from TorchSharp's one global
/// generator, so seeding and creating a model happen under one lock: entities of a process start
/// concurrently, and each must get the weights the engine-only loop would get for the same seed.
/// </summary>
public static class EngineAccess
{
    private static readonly object InitGate = new();

    /// <summary>
    /// Engine work runs on dedicated compute threads (one by default), not on the thread pool.
    /// libtorch already spreads each operation over every core (intra-op OpenMP threads), and
    /// OpenMP keeps a team of threads per calling thread: engine calls from ever-changing pool
    /// threads, or from several at once, oversubscribe the cores with spinning teams (the actor
    /// pipeline ran at 0.42x the engine loop that way, on 2 cores). Entities still overlap their
    /// I/O, journaling and messaging with each other's compute. CLUSTERDISTILL_COMPUTE_SLOTS
    /// raises the thread count (e.g. several GPUs per node).
    /// </summary>
    private static readonly System.Collections.Concurrent.BlockingCollection<Action> Work = StartComputeThreads();

    public static int ComputeSlots =>
        int.TryParse(Environment.GetEnvironmentVariable("CLUSTERDISTILL_COMPUTE_SLOTS"), out var n) && n > 0 ? n : 1;

    private static System.Collections.Concurrent.BlockingCollection<Action> StartComputeThreads()
    {
        var queue = new System.Collections.Concurrent.BlockingCollection<Action>();
        for (var i = 0; i < ComputeSlots; i++)
            new Thread(() => { foreach (var work in queue.GetConsumingEnumerable()) work(); }) { IsBackground = true, Name = $"engine-compute-{i}" }.Start();
        return queue;
    }

    /// <summary>Runs engine work on a compute thread; the task completes with its result or exception.</summary>
    public static Task<T> Compute<T>(Func<T> work)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        Work.Add(() =>
        {
            try { done.SetResult(work()); }
            catch (Exception e) { done.SetException(e); }
        });
        return done.Task;
    }

    public static RunSpec ParseSpec(string yaml, string runId) => SpecParser.Parse(yaml, $"run {runId}");

    public static Device DeviceFor(RunSpec spec)
    {
        TorchRuntime.Initialize();
        return Devices.Resolve(spec.Device);
    }

    /// <summary>The student model as the engine creates it: manual_seed(seed), then the architecture.</summary>
    public static Classifier NewStudent(RunSpec spec, DataSplits data, Device device)
    {
        lock (InitGate)
        {
            manual_seed(spec.Seed);
            var m = ModelFactory.Create(spec.Student.Arch, data.Channels, spec.Data.ImageSize, data.Classes);
            m.to(device);
            return m;
        }
    }

    public static T Seeded<T>(long seed, Func<T> create)
    {
        lock (InitGate)
        {
            manual_seed(seed);
            return create();
        }
    }

    public static Classifier LoadModel(string arch, DataSplits data, int imageSize, byte[] weights, Device device)
    {
        var m = ModelFactory.Create(arch, data.Channels, imageSize, data.Classes);
        using (var ms = new MemoryStream(weights)) m.load(ms);
        m.to(device);
        return m;
    }

    public static byte[] SaveModel(nn.Module model)
    {
        using var ms = new MemoryStream();
        model.save(ms);
        return ms.ToArray();
    }

    public static byte[] Save(Action<BinaryWriter> write)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) write(w);
        return ms.ToArray();
    }

    public static void Load(byte[] bytes, Action<BinaryReader> read)
    {
        using var r = new BinaryReader(new MemoryStream(bytes));
        read(r);
    }
}
