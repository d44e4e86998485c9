using Distill.Engine.Native;

namespace Cluster.Tests;

public sealed class TorchRuntimeTests
{
    /// <summary>
    /// MKL_CBWR=AUTO,STRICT (0x10002) in the test host too, whether or not scripts/test.sh exported
    /// it: the process tests compare node processes (which re-exec with it) with runs in this
    /// process bit for bit, and MKL's default mode computes other last bits.
    /// </summary>
    [Fact]
    public void Should_run_MKL_in_its_reproducible_mode_without_MKL_CBWR_in_the_environment()
    {
        Torch.Init();
        if (Environment.GetEnvironmentVariable("MKL_CBWR") is { } own && own != NativeBootstrap.LoadEnvironment["MKL_CBWR"]) return;   // a user's own value wins
        Assert.Equal(0x10002, TorchRuntime.MklReproducibility());
    }
}
