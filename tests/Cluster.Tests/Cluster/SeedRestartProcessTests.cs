using System.Diagnostics;

namespace Cluster.Tests.Cluster;

/// <summary>
/// A seed restarted alone forms a new cluster; the GPU node that was in the old one notices and
/// joins the new one, and a run submitted after the restart completes. Real processes, PostgreSQL.
/// </summary>
[Collection(ProcessLanes.B)]
public sealed class SeedRestartProcessTests
{
    [Fact]
    public void Should_heal_the_cluster_after_its_only_seed_restarts_and_complete_a_run_submitted_then()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("seedrestart");
        var teacher = cluster.SaveTeacher(31);
        var spec = Path.Combine(cluster.Work, "after.yaml");
        File.WriteAllText(spec, ProcessCluster.TinyDafl("after", 6, teacher, 10, 10, "{checkpoint_every: 5}"));
        var port = TestPorts.Block(4);
        var seeds = $"127.0.0.1:{port}";
        string[] serve = ["serve", "--port", port.ToString(), "--http-port", cluster.HttpPort.ToString(), .. cluster.Common];
        string Logs() => cluster.Logs(l => l.Contains("gpu-node") || l.Contains("seed") || l.Contains("Welcome") || l.Contains("Leader"), 30);

        var seed = cluster.Start(cluster.SeedBin, "seed-1.log", serve);
        Thread.Sleep(3000);
        cluster.Start(cluster.GpuBin, "gpu.log", ["join", "--seeds", seeds, "--port", (port + 1).ToString(), .. cluster.Common]);
        cluster.WaitUntilUp(DateTime.UtcNow.AddMinutes(2), "gpu.log");

        // SIGTERM the seed (coordinated shutdown: it leaves), then start it again on the same address
        using (var kill = Process.Start("kill", ["-TERM", seed.Id.ToString()])) kill.WaitForExit();
        Assert.True(ProcessCluster.Ended(seed, TimeSpan.FromSeconds(60)), "the seed did not stop on SIGTERM: " + Logs());
        cluster.Start(cluster.SeedBin, "seed-2.log", serve);

        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (!cluster.Log("gpu.log").Contains("the seeds formed a new cluster: joining it"))
        {
            Assert.True(DateTime.UtcNow < deadline, "the GPU node did not notice the seed's new cluster: " + Logs());
            Thread.Sleep(500);
        }
        while (cluster.Log("gpu.log").Split("[gpu-node] up at").Length < 3)
        {
            Assert.True(DateTime.UtcNow < deadline, "the GPU node did not join the seed's new cluster: " + Logs());
            Thread.Sleep(500);
        }

        var submit = cluster.Start(cluster.SeedBin, "submit.log", ["submit", spec, "--server", cluster.Server, "--run-id", "after", "--follow"]);
        Assert.True(ProcessCluster.Ended(submit, TimeSpan.FromMinutes(3)), "the run submitted after the restart did not finish: " + Logs());
        submit.WaitForExit();
        Assert.True(submit.ExitCode == 0, "the run submitted after the restart failed: " + Logs());
        Assert.Contains("completed step 10/10", cluster.Log("submit.log"));

        // SIGTERM (a pod's stop) ends the node that joined again, as it ends one that never left: at once, exit 0, no third join
        var gpu = cluster.Processes.Single(p => !p.HasExited && p.StartInfo.FileName == cluster.GpuBin);
        var clock = Stopwatch.StartNew();
        using (var kill = Process.Start("kill", ["-TERM", gpu.Id.ToString()])) kill.WaitForExit();
        Assert.True(ProcessCluster.Ended(gpu, TimeSpan.FromSeconds(30)), "the GPU node did not stop on SIGTERM: " + Logs());
        gpu.WaitForExit();
        Assert.True(gpu.ExitCode == 0, $"the GPU node exited {gpu.ExitCode} on SIGTERM after {clock.Elapsed.TotalSeconds:F1} s: " + Logs());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"the GPU node took {clock.Elapsed.TotalSeconds:F1} s to stop on SIGTERM");
        Assert.Equal(3, cluster.Log("gpu.log").Split("[gpu-node] up at").Length);
        Assert.DoesNotContain("removed from the cluster: joining again", cluster.Log("gpu.log"));
    }
}
