using Akka.Actor;
using Distill.Engine.Interop;
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
    /// Runs engine work on the process's one TorchSharp thread (<see cref="TorchThread"/>: why one
    /// thread, and why collections wait for the gaps between its jobs); the task completes with
    /// its result or exception.
    /// </summary>
    public static Task<T> Compute<T>(Func<T> work) => TorchThread.Shared.Run(work);

    /// <summary>
    /// Runs an entity's engine work on the compute thread, which tells the result to the entity
    /// (a <see cref="Status.Failure"/> for an exception, or what <paramref name="failure"/> makes of
    /// it) as soon as the job ends: no thread-pool hop between them (<see cref="TorchThread.Run{T}(Func{T}, Action{T}, Action{Exception})"/>).
    /// Entities overlap their I/O, journaling and messaging with it.
    /// </summary>
    public static void Compute<T>(IActorRef to, Func<T> work, Func<Exception, object>? failure = null) =>
        TorchThread.Shared.Run(work, r => to.Tell(r), e => to.Tell(failure is null ? new Status.Failure(e) : failure(e)));

    /// <summary>Disposes engine objects on the compute thread, after any work queued before (an actor stopping).</summary>
    public static void Release(Action dispose) => TorchThread.Shared.Post(dispose);

    public static RunSpec ParseSpec(string yaml, string runId) => SpecParser.Parse(yaml, $"run {runId}");

    public static Device DeviceFor(RunSpec spec)
    {
        TorchRuntime.Initialize();
        return Devices.Resolve(spec.Device);
    }

    /// <summary>The student model as the engine creates it: manual_seed(seed), then the architecture, then the spec's student checkpoint if it names one.</summary>
    public static Classifier NewStudent(RunSpec spec, DataSplits data, Device device) => NewStudent(spec, data, device, out _);

    /// <param name="loaded">what loading the spec's student checkpoint did (null when it names none)</param>
    public static Classifier NewStudent(RunSpec spec, DataSplits data, Device device, out LoadReport? loaded)
    {
        lock (InitGate)
        {
            manual_seed(spec.Seed);
            var m = ModelFactory.Create(spec.Student.Arch, data.Channels, spec.Data.ImageSize, data.Classes);
            loaded = StateDictLoader.LoadCheckpoint(m, spec.Student, data.Channels, spec.Data.ImageSize, data.Classes);
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
        ModuleState.Load(m, weights);
        m.to(device);
        return m;
    }

    /// <summary>Weights saved by <see cref="SaveModel"/> into a model of the same architecture.</summary>
    public static void LoadInto(nn.Module model, byte[] weights)
    {
        ModuleState.Load(model, weights);
    }

    public static byte[] SaveModel(nn.Module model)
    {
        using var ms = new MemoryStream();
        model.save(ms);
        return ms.ToArray();
    }

    public static byte[] Save(Action<BinaryWriter> write)
    {
        using var scope = NewDisposeScope();   // the copies a state writer makes go now, not with the finalizer
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
