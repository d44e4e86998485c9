using Distill.Engine.Native;

namespace Cluster.Tests;

/// <summary>
/// Every test that touches TorchSharp runs after the engine's process-wide settings. If TorchSharp
/// cannot load at all (Debian 12 without the shim), say how to run the tests instead of failing obscurely.
/// </summary>
public static class Torch
{
    private static readonly Lazy<bool> Ready = new(() =>
    {
        try { TorchRuntime.Initialize(); }
        catch (TypeInitializationException e) when (e.InnerException is NotSupportedException or DllNotFoundException)
        {
            throw new InvalidOperationException(
                "TorchSharp could not load: on Debian 12 run the tests through scripts/test.sh (it puts the libstdc++ shim on LD_LIBRARY_PATH)", e);
        }
        return true;
    });

    public static void Init() => _ = Ready.Value;
}

/// <summary>Tests that read real MNIST share one load of it.</summary>
public sealed class MnistFixture : IDisposable
{
    public MnistFixture()
    {
        Torch.Init();
        Data = Distill.Engine.Training.DataSplits.Load(new Distill.Engine.Specs.DataSpec { Name = "mnist" });
    }

    public Distill.Engine.Training.DataSplits Data { get; }

    public void Dispose() => Data.Dispose();
}

/// <summary>
/// Tests that read real MNIST, or that compare two computations seeded through TorchSharp's one
/// global generator: they run alone, so that no test in parallel draws from that generator
/// between a seed and the model it initialises, and no other thread's allocations end the no-GC
/// region their TorchSharp calls run in (<see cref="Distill.Engine.Native.QuietCollections"/>).
/// Alone means in a test host of their own: each class also carries the trait
/// <see cref="Host"/> = <see cref="Alone"/>, and scripts/test.sh runs those tests in a second
/// `dotnet test` beside the first, whose process lanes leave a core idle much of the time. Within
/// their host they run one after another (and after anything else a filter lets in).
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MnistCollection : ICollectionFixture<MnistFixture>
{
    public const string Name = "mnist";

    /// <summary>
    /// The trait scripts/test.sh splits the suite by: Host=alone beside the rest, then Host=quiet
    /// alone on the machine, for the tests that measure what a thread does in a given time (a
    /// machine busy with the other host's tests slows their jobs past what they assert).
    /// </summary>
    public const string Host = "Host", Alone = "alone", Quiet = "quiet";
}
