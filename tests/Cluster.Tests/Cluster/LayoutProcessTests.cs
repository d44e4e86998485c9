using System.Text.Json;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The spec's layout places each run's entities: two GPU-node processes in pools "east" and
/// "west" (each able to host every kind) and two runs with opposite layouts on the same cluster,
/// one with a replica in each pool. Real processes, a PostgreSQL journal, bounded in time.
/// </summary>
[Collection(ProcessLanes.B)]
public sealed class LayoutProcessTests
{
    [Fact]
    public void Should_place_each_runs_entities_in_the_pools_its_spec_names()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("layout");
        var work = cluster.Work;
        var teacher = cluster.SaveTeacher(21);
        string Spec(string name, int replicas, string layout)
        {
            var path = Path.Combine(work, name + ".yaml");
            File.WriteAllText(path, ProcessCluster.TinyDafl(name, 5, teacher, 10, 10, $"{{replicas: {replicas}, checkpoint_every: 5, layout: {layout} }}"));
            return path;
        }
        var specA = Spec("a", 1, "{generator: east, teacher: east, student: west}");
        var specB = Spec("b", 2, "{generator: west, teacher: west, student: [east, west]}");

        var port = TestPorts.Block(4);
        string Logs() => cluster.Logs(l => l.Contains("ready") || l.Contains("loaded") || l.Contains("pool"), 20);
        cluster.Start(cluster.SeedBin, "seed.log", ["serve", "--port", port.ToString(), "--http-port", cluster.HttpPort.ToString(), .. cluster.Common]);
        Thread.Sleep(3000);
        var seeds = $"127.0.0.1:{port}";
        cluster.Start(cluster.GpuBin, "east.log", ["join", "--seeds", seeds, "--port", (port + 1).ToString(), "--pool", "east", .. cluster.Common]);
        cluster.Start(cluster.GpuBin, "west.log", ["join", "--seeds", seeds, "--port", (port + 2).ToString(), "--pool", "west", .. cluster.Common]);
        cluster.WaitUntilUp(DateTime.UtcNow.AddMinutes(2), "east.log", "west.log");
        Thread.Sleep(2000);
        var a = cluster.Start(cluster.SeedBin, "submit-a.log", ["submit", specA, "--server", cluster.Server, "--run-id", "ra", "--follow"]);
        var b = cluster.Start(cluster.SeedBin, "submit-b.log", ["submit", specB, "--server", cluster.Server, "--run-id", "rb", "--follow"]);
        Assert.True(ProcessCluster.Ended(a, TimeSpan.FromMinutes(4)) && ProcessCluster.Ended(b, TimeSpan.FromMinutes(2)), "the runs did not finish: " + Logs());
        a.WaitForExit();
        b.WaitForExit();
        Assert.True(a.ExitCode == 0 && b.ExitCode == 0, "a run failed: " + Logs());

        var east = cluster.Log("east.log");
        var west = cluster.Log("west.log");
        void On(string log, string other, string entity, string what)
        {
            Assert.True(log.Contains($"{entity}: {what}"), $"{entity} is not where its spec's layout puts it: " + Logs());
            Assert.False(other.Contains($"{entity}: {what}"), $"{entity} also ran in the other pool: " + Logs());
        }
        On(east, west, "ra/generator/0", "generator ready");
        On(east, west, "ra/teacher/0", "teacher loaded");
        On(west, east, "ra/student/0", "student ready");
        On(west, east, "rb/generator/0", "generator ready");
        On(west, east, "rb/teacher/0", "teacher loaded");
        On(east, west, "rb/student/0", "student ready");
        On(west, east, "rb/student/1", "student ready");

        // and status.json says so
        using var statusA = JsonDocument.Parse(File.ReadAllText(Path.Combine(work, "runs", "ra", "status.json")));
        Assert.Equal("completed", statusA.RootElement.GetProperty("state").GetString());
        Assert.Equal($"127.0.0.1:{port + 2}", statusA.RootElement.GetProperty("student_node").GetString());
        Assert.Equal($"127.0.0.1:{port + 1}", statusA.RootElement.GetProperty("generator_node").GetString());
    }
}
