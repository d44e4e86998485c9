using System.Text.RegularExpressions;

namespace Cluster.Tests.Cluster;

/// <summary>
/// A run submitted to a seed that no GPU node has joined yet: its status says what it waits for,
/// instead of "preparing teacher, step 0" forever, the seed's log does not repeat Akka's sharding
/// warning every 2 s, and the run starts once a GPU node joins.
/// </summary>
[Collection(ProcessLanes.B)]
public sealed class LoneSeedProcessTests
{
    [Fact]
    public void Should_say_a_run_waits_for_a_gpu_node_and_start_it_when_one_joins()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("lone");
        var teacher = cluster.SaveTeacher(61);
        var spec = Path.Combine(cluster.Work, "lone.yaml");
        File.WriteAllText(spec, ProcessCluster.TinyDafl("lone", 4, teacher, 40, 40));
        var port = TestPorts.Block(2);
        var seeds = $"127.0.0.1:{port}";
        cluster.Start(cluster.SeedBin, "seed.log", ["serve", "--port", port.ToString(), "--http-port", cluster.HttpPort.ToString(), .. cluster.Common]);
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (!cluster.Log("seed.log").Contains("seed node up at"))
        {
            Assert.True(DateTime.UtcNow < deadline, "the seed did not come up: " + cluster.Log("seed.log"));
            Thread.Sleep(250);
        }
        var follow = cluster.Start(cluster.SeedBin, "follow.log", ["submit", spec, "--server", cluster.Server, "--run-id", "l1", "--follow"]);

        var waitingFor = TimeSpan.FromSeconds(8);
        Thread.Sleep(waitingFor);
        var status = cluster.Start(cluster.SeedBin, "status.log", ["status", "--server", cluster.Server]);
        Assert.True(ProcessCluster.Ended(status, TimeSpan.FromSeconds(60)), "status: " + cluster.Logs(_ => true, 20));
        Assert.Contains("(waiting: no node that is up hosts generator, teacher, student; start a GPU node", cluster.Log("status.log"));
        Assert.Contains("\"message\":\"waiting: no node that is up hosts", File.ReadAllText(Path.Combine(cluster.Work, "runs", "l1", "status.json")));
        // Akka's proxies say it every 2 s per region; the log prints it once a minute per region
        var repeats = Regex.Matches(cluster.Log("seed.log"), "No coordinator found to register").Count;
        Assert.True(repeats <= 3, $"{repeats} lines of the same sharding warning in {waitingFor.TotalSeconds} s:\n" + cluster.Log("seed.log"));

        // a second run, and a node of one slot: the second waits in the queue, and says so, until the first ends
        var second = cluster.Start(cluster.SeedBin, "follow-2.log", ["submit", spec, "--server", cluster.Server, "--run-id", "l2", "--follow"]);
        Thread.Sleep(4000);
        cluster.Start(cluster.GpuBin, "gpu.log", ["join", "--seeds", seeds, "--port", (port + 1).ToString(), "--slots", "1", .. cluster.Common]);
        Assert.True(ProcessCluster.Ended(follow, TimeSpan.FromMinutes(4)), "the run did not finish after a GPU node joined: " + cluster.Logs(_ => true, 30));
        Assert.True(ProcessCluster.Ended(second, TimeSpan.FromMinutes(3)), "the queued run did not finish after the first: " + cluster.Logs(_ => true, 30));
        Assert.Contains("[l2] queued step 0/40 batches: 0 made, 0 pooled, 0 queued, 0 at the student (queued: 1 of 1 waiting for a slot (1 of 1 slots busy))", cluster.Log("follow-2.log"));
        Assert.Contains("completed step 40/40", cluster.Log("follow-2.log"));
        // it started only after the first had ended
        var events = File.ReadAllText(Path.Combine(cluster.Work, "runs", "l2", "events.log"));
        var firstDone = File.GetLastWriteTimeUtc(Path.Combine(cluster.Work, "runs", "l1", "result.json"));
        var admitted = DateTime.Parse(events.Split('\n').First(l => l.Contains("admitted: a slot is free")).Split(' ')[0], null, System.Globalization.DateTimeStyles.RoundtripKind);
        Assert.True(admitted >= firstDone.AddSeconds(-1), $"l2 was admitted at {admitted:O}, before l1 ended at {firstDone:O}");
        Assert.Contains("(waiting: no node that is up hosts generator, teacher, student", cluster.Log("follow.log"));
        Assert.Contains("completed step 40/40", cluster.Log("follow.log"));
        Assert.True(File.Exists(Path.Combine(cluster.Work, "runs", "l1", "result.json")));
    }
}
