using System.Diagnostics;
using System.Text.Json;

namespace Cluster.Tests.Cluster;

/// <summary>
/// A seed restarted alone forms a new cluster; the GPU node that was in the old one notices and
/// joins the new one, a run that trained on while the seed was down completes with every metrics
/// row it logged meanwhile, and a run submitted after the restart completes. Real processes, PostgreSQL.
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
        var during = Path.Combine(cluster.Work, "during.yaml");
        File.WriteAllText(during, ProcessCluster.TinyDafl("during", 7, teacher, Steps, Steps, "{checkpoint_every: 50}"));
        var port = TestPorts.Block(4);
        var seeds = $"127.0.0.1:{port}";
        string[] serve = ["serve", "--port", port.ToString(), "--http-port", cluster.HttpPort.ToString(), .. cluster.Common];
        string Logs() => cluster.Logs(l => l.Contains("gpu-node") || l.Contains("seed") || l.Contains("Welcome") || l.Contains("Leader"), 30);

        var seed = cluster.Start(cluster.SeedBin, "seed-1.log", serve);
        Thread.Sleep(3000);
        cluster.Start(cluster.GpuBin, "gpu.log", ["join", "--seeds", seeds, "--port", (port + 1).ToString(), .. cluster.Common]);
        cluster.WaitUntilUp(DateTime.UtcNow.AddMinutes(2), "gpu.log");

        // a run that trains on while the seed is away: its student logs a row every 25 steps
        var submitDuring = cluster.Start(cluster.SeedBin, "submit-during.log", ["submit", during, "--server", cluster.Server, "--run-id", "during"]);
        Assert.True(ProcessCluster.Ended(submitDuring, TimeSpan.FromSeconds(30)) && submitDuring.ExitCode == 0, "the first run was not accepted: " + Logs());
        var duringDir = Path.Combine(cluster.Work, "runs", "during");
        var shown = WaitForStep(duringDir, 25, DateTime.UtcNow.AddMinutes(2), Logs);

        // SIGTERM the seed (coordinated shutdown: it leaves), leave it down a while, then start it again on the same address
        using (var kill = Process.Start("kill", ["-TERM", seed.Id.ToString()])) kill.WaitForExit();
        Assert.True(ProcessCluster.Ended(seed, TimeSpan.FromSeconds(60)), "the seed did not stop on SIGTERM: " + Logs());
        var rowsBefore = StudentRows(duringDir);
        Thread.Sleep(8000);
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

        // the first run completed, and its metrics.csv has a row for every 25th step, those logged while no coordinator was up included
        var deadlineDuring = DateTime.UtcNow.AddMinutes(3);
        while (!File.Exists(Path.Combine(duringDir, "result.json")))
        {
            Assert.True(DateTime.UtcNow < deadlineDuring, "the run that trained through the seed's restart did not complete: " + Logs());
            Thread.Sleep(500);
        }
        var steps = new HashSet<long>();
        deadlineDuring = DateTime.UtcNow.AddSeconds(30);
        // rows held through the outage may come after the run's end
        while (Enumerable.Range(1, Steps / 25).Any(i => !(steps = StudentRows(duringDir)).Contains(i * 25L)) && DateTime.UtcNow < deadlineDuring) Thread.Sleep(500);
        var missing = Enumerable.Range(1, Steps / 25).Select(i => i * 25L).Where(x => !steps.Contains(x)).ToList();
        Assert.True(missing.Count == 0, $"metrics.csv of the run through the restart lacks student rows at steps {string.Join(", ", missing)} " +
            $"(status showed step {shown} at the seed's stop; the seed's last rows: {rowsBefore.DefaultIfEmpty().Max()}): " + Logs());
        Assert.True(rowsBefore.DefaultIfEmpty().Max() < Steps - 100, $"the run had logged up to step {rowsBefore.Max()} of {Steps} when the seed stopped: too late to show anything");

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

    /// <summary>The steps of the run that trains through the restart: long enough to outlast the seed's absence.</summary>
    private const int Steps = 1500;

    private static long WaitForStep(string runDir, long step, DateTime deadline, Func<string> logs)
    {
        while (true)
        {
            try
            {
                using var s = JsonDocument.Parse(File.ReadAllText(Path.Combine(runDir, "status.json")));
                if (s.RootElement.GetProperty("step").GetInt64() is var at && at >= step) return at;
            }
            catch (Exception e) when (e is IOException or JsonException or KeyNotFoundException) { }
            Assert.True(DateTime.UtcNow < deadline, $"the run in {runDir} did not reach step {step}: " + logs());
            Thread.Sleep(200);
        }
    }

    /// <summary>The steps of replica 0's rows in the run's metrics.csv.</summary>
    private static HashSet<long> StudentRows(string runDir) =>
        File.ReadLines(Path.Combine(runDir, "metrics.csv")).Skip(1).Select(l => l.Split(','))
            .Where(c => c[0] == "student-0").Select(c => long.Parse(c[1])).ToHashSet();
}
