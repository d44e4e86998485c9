using System.Diagnostics;
using Distill.Engine.Models;
using static TorchSharp.torch;

namespace Cluster.Tests.Cluster;

/// <summary>
/// Two student replicas in two GPU-node processes (the layout puts the generator and teacher on a
/// third), all-reducing gradients over Akka.Remote, must reach the weights of one process training
/// on the combined batch, to float tolerance; also when one replica's node is killed mid-run and
/// the replica comes back on the other node from its checkpoint while its peer is ahead. Real
/// processes, a PostgreSQL journal, bounded in time.
/// </summary>
[Collection(ProcessLanes.B)]
public sealed class ReplicaProcessTests
{
    [Fact]
    public void Should_reach_the_combined_batch_weights_with_two_replicas_in_two_processes() =>
        RunTwoReplicas(steps: 12, checkpointEvery: 6, killAtStep: null);

    [Fact]
    public void Should_keep_the_replicas_in_lockstep_when_one_replica_node_is_killed_mid_run() =>
        // long enough that the freeze at step 60, seen through submit's 2-s polls, lands well before
        // the end on a fast host (200 steps once ran in 15 s and ended before the freeze)
        RunTwoReplicas(steps: 500, checkpointEvery: 25, killAtStep: 60);

    /// <summary>
    /// Four replicas in one embedded run reduce-scatter their gradients (each reduces a quarter and
    /// sends it to the others) and reach the weights of one process on the combined batch.
    /// </summary>
    [Fact]
    public void Should_reach_the_combined_batch_weights_with_four_replicas_that_reduce_a_shard_each()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("replicas4");
        var work = cluster.Work;
        var spec = Path.Combine(work, "four.yaml");
        File.WriteAllText(spec, Spec(cluster.SaveTeacher(21), steps: 12, checkpointEvery: 6, replicas: 4));
        RunToEnd(cluster, "embedded.log", "run", spec, "--runs-dir", Path.Combine(work, "embedded"), "--run-id", "four");
        RunToEnd(cluster, "engine.log", "run", spec, "--engine", "--runs-dir", Path.Combine(work, "engine"), "--run-id", "one");
        AssertSameWeights(Path.Combine(work, "embedded", "four", "student.pt"), Path.Combine(work, "engine", "one", "student.pt"), bits: false,
            "four replicas differ from the combined batch");
        // four student entities trained (each persisted its steps), not one on the whole batch
        using var journal = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(work, "embedded", "four", "journal.db")}");
        journal.Open();
        using var query = journal.CreateCommand();
        query.CommandText = "SELECT DISTINCT persistence_id FROM journal WHERE persistence_id LIKE 'student-%'";
        List<string> students = [];
        using (var rows = query.ExecuteReader())
            while (rows.Read()) students.Add(rows.GetString(0));
        Assert.Equal([.. Enumerable.Range(0, 4).Select(r => $"student-four/student/{r}")], students.Order());
    }

    /// <summary>
    /// Three replicas on three GPU-node processes reduce-scatter their gradients; the node of
    /// replica 1 is killed mid-run. The replica comes back on a survivor from its checkpoint, the
    /// others step back to it, and the run ends with the bits of the same run uninterrupted.
    /// </summary>
    [Fact]
    public void Should_reach_the_uninterrupted_weights_when_one_of_three_replicas_nodes_is_killed()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("replicas3");
        var work = cluster.Work;
        var spec = Path.Combine(work, "three.yaml");
        File.WriteAllText(spec, Spec(cluster.SaveTeacher(21), steps: 150, checkpointEvery: 25, replicas: 3, batch: 36));
        var port = TestPorts.Block(5);
        string[] students = ["studentA.log", "studentB.log", "studentC.log"];
        string Logs() => cluster.Logs(l => l.Contains("student"), 15);
        cluster.Start(cluster.SeedBin, "seed.log", ["serve", "--port", port.ToString(), "--http-port", cluster.HttpPort.ToString(), .. cluster.Common]);
        Thread.Sleep(3000);
        var seeds = $"127.0.0.1:{port}";
        cluster.Start(cluster.GpuBin, "gen.log", ["join", "--seeds", seeds, "--port", (port + 1).ToString(), "--hosts", "generator,teacher", .. cluster.Common]);
        for (var i = 0; i < students.Length; i++)
            cluster.Start(cluster.GpuBin, students[i], ["join", "--seeds", seeds, "--port", (port + 2 + i).ToString(), "--hosts", "student", .. cluster.Common]);
        var deadline = DateTime.UtcNow.AddMinutes(2);
        cluster.WaitUntilUp(deadline, ["gen.log", .. students]);
        Thread.Sleep(2000);
        var submit = cluster.Start(cluster.SeedBin, "submit.log", ["submit", spec, "--server", cluster.Server, "--run-id", "three", "--follow"]);
        while (StudentStep(work) < 60)
        {
            Assert.True(DateTime.UtcNow < deadline.AddMinutes(3) && !submit.HasExited, "the run did not reach step 60: " + Logs());
            Thread.Sleep(100);
        }
        var host = Array.FindIndex(students, l => cluster.Log(l).Contains("three/student/1: student ready at step "));
        Assert.True(host >= 0, "no node says it hosts replica 1: " + Logs());
        var killed = cluster.Processes[2 + host];
        killed.Kill(entireProcessTree: true);
        killed.WaitForExit();
        Assert.True(ProcessCluster.Ended(submit, TimeSpan.FromMinutes(6)), "the three-replica run did not finish in 6 minutes: " + Logs());
        submit.WaitForExit();
        Assert.True(submit.ExitCode == 0, "submit --follow failed: " + Logs());
        // what the killed node hosted came back on a survivor from a checkpoint, not from the start
        var resumedAt = students.Where((_, i) => i != host)
            .SelectMany(l => System.Text.RegularExpressions.Regex.Matches(cluster.Log(l), @"three/student/\d: student ready at step (\d+)"))
            .Select(m => long.Parse(m.Groups[1].Value)).DefaultIfEmpty(0).Max();
        Assert.True(resumedAt >= 25, "no replica resumed from a checkpoint on a survivor: " + Logs());

        RunToEnd(cluster, "embedded.log", "run", spec, "--runs-dir", Path.Combine(work, "embedded"), "--run-id", "ref");
        AssertSameWeights(Path.Combine(work, "runs", "three", "student.pt"), Path.Combine(work, "embedded", "ref", "student.pt"), bits: true,
            "the run with a killed replica differs from the uninterrupted one");
    }

    /// <summary>Runs a Cluster.Seed command to its end (4 minutes at most), successfully.</summary>
    private static void RunToEnd(ProcessCluster cluster, string log, params string[] args)
    {
        var p = cluster.Start(cluster.SeedBin, log, args);
        Assert.True(ProcessCluster.Ended(p, TimeSpan.FromMinutes(4)), $"{log}: the run did not finish: " + cluster.Log(log));
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{log}: the run failed: " + cluster.Log(log));
    }

    /// <summary>The students saved at two paths: the same bits, or equal to float tolerance (summation orders differ).</summary>
    private static void AssertSameWeights(string path, string reference, bool bits, string what) =>
        // alone: creating the models draws from TorchSharp's one generator, which the torch lane's tests seed
        TorchLane.Run(() =>
        {
            using var a = ModelFactory.Create("lenet5-half", 1, 32, 10);
            a.load(path);
            using var b = ModelFactory.Create("lenet5-half", 1, 32, 10);
            b.load(reference);
            foreach (var (p, q) in a.parameters().Zip(b.parameters()))
                Assert.True(bits ? p.eq(q).all().item<bool>() : p.allclose(q, rtol: 1e-4, atol: 1e-6), $"{what} by {(p - q).abs().max().item<float>():G3}");
            return true;
        });

    private static string Spec(string teacher, int steps, int checkpointEvery, int replicas, int batch = 32) => $"""
        name: replicas
        method: dafl
        seed: 5
        data: {"{"}name: mnist, image_size: 32{"}"}
        teacher:
          arch: lenet5
          checkpoint: {teacher}
        student:
          arch: lenet5-half
          train: {"{"}optimizer: adam, lr: 0.002{"}"}
        dafl: {"{"}steps: {steps}, batch_size: {batch}, generator_width: 8, generator_lr: 0.02, activation: code, entropy: code, eval_every: {steps}{"}"}
        cluster: {"{"}replicas: {replicas}, checkpoint_every: {checkpointEvery}{"}"}
        guard: {"{"}enabled: false{"}"}
        """;

    private static void RunTwoReplicas(int steps, int checkpointEvery, int? killAtStep)
    {
        Torch.Init();
        using var cluster = new ProcessCluster("replicas");
        var work = cluster.Work;
        var teacher = cluster.SaveTeacher(21);
        var spec = Path.Combine(work, "replicas.yaml");
        File.WriteAllText(spec, Spec(teacher, steps, checkpointEvery, replicas: 2));

        var port = TestPorts.Block(4);
        string Logs() => cluster.Logs(l => l.Contains("student"), 15);
        cluster.Start(cluster.SeedBin, "seed.log", ["serve", "--port", port.ToString(), "--http-port", cluster.HttpPort.ToString(), .. cluster.Common]);
        Thread.Sleep(3000);
        var seeds = $"127.0.0.1:{port}";
        cluster.Start(cluster.GpuBin, "gen.log", ["join", "--seeds", seeds, "--port", (port + 1).ToString(), "--hosts", "generator,teacher", .. cluster.Common]);
        cluster.Start(cluster.GpuBin, "studentA.log", ["join", "--seeds", seeds, "--port", (port + 2).ToString(), "--hosts", "student", .. cluster.Common]);
        cluster.Start(cluster.GpuBin, "studentB.log", ["join", "--seeds", seeds, "--port", (port + 3).ToString(), "--hosts", "student", .. cluster.Common]);
        // the layout only holds once every node's shard regions are registered: wait for all three
        var deadline = DateTime.UtcNow.AddMinutes(2);
        cluster.WaitUntilUp(deadline, "gen.log", "studentA.log", "studentB.log");
        Thread.Sleep(2000);
        var submit = cluster.Start(cluster.SeedBin, "submit.log", ["submit", spec, "--server", cluster.Server, "--run-id", "two", "--follow"]);
        Process? killed = null;
        if (killAtStep is { } at)
        {
            // kill -9 the node of replica 1 once the run is past the first checkpoints, at a moment
            // when its peer is past replica 1's last checkpoint: the node is frozen first, and its
            // peer's wait names the step it is at; at a checkpoint step (nothing to roll back) the
            // node goes on and the test tries a few steps later
            var waiting = new System.Text.RegularExpressions.Regex(@"two/student/0: waiting on the gradient of replicas 1 for step (\d+)");
            while (true)
            {
                while (StudentStep(work) < at)
                {
                    Assert.True(DateTime.UtcNow < deadline.AddMinutes(3) && !submit.HasExited, $"the run did not reach step {at}: " + Logs());
                    Thread.Sleep(100);
                }
                // (once it trains, both replicas are placed)
                var hostsOne = cluster.Log("studentA.log").Contains("two/student/1: student ready") ? 2 : 3;
                killed = cluster.Processes[hostsOne];
                var survivorLog = hostsOne == 2 ? "studentB.log" : "studentA.log";
                var before = waiting.Matches(cluster.Log(survivorLog)).Count;
                Signal(killed, "STOP");
                var frozen = DateTime.UtcNow;
                System.Text.RegularExpressions.MatchCollection m;
                while ((m = waiting.Matches(cluster.Log(survivorLog))).Count == before)
                {
                    Assert.True(DateTime.UtcNow - frozen < TimeSpan.FromSeconds(30), "replica 0 did not wait for the frozen replica 1: " + Logs());
                    Thread.Sleep(100);
                }
                var peerAt = long.Parse(m[^1].Groups[1].Value) - 1;
                if (peerAt % checkpointEvery != 0) break;
                Signal(killed, "CONT");
                at = (int)peerAt + 5;
            }
            killed.Kill(entireProcessTree: true);
            killed.WaitForExit();
        }
        Assert.True(ProcessCluster.Ended(submit, TimeSpan.FromMinutes(6)), "the two-replica run did not finish in 6 minutes: " + Logs());
        submit.WaitForExit();
        Assert.True(submit.ExitCode == 0, "submit --follow failed: " + Logs());

        // each student process hosted one replica: two processes really exchanged gradients (a
        // replica placed beside its sibling before the other node registered is moved to it)
        var a = cluster.Log("studentA.log");
        var b = cluster.Log("studentB.log");
        bool Hosts(string log, int replica) => log.Contains($"two/student/{replica}: student ready at step ");
        Assert.True(Hosts(a, 0) && Hosts(b, 1) || Hosts(a, 1) && Hosts(b, 0), "the replicas were not on two processes: " + Logs());
        // the run's status names both replicas' nodes, not whichever reported last
        if (killed is null)
        {
            using var status = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(work, "runs", "two", "status.json")));
            Assert.Equal([$"127.0.0.1:{port + 2}", $"127.0.0.1:{port + 3}"], status.RootElement.GetProperty("student_node").GetString()!.Split(", ").Order());
        }
        if (killed is null)
        {
            // batches (generator node -> student nodes) and gradient chunks (student <-> student)
            // went over the data plane, not through Akka.Remote
            static (long Sent, long Received, long Akka) Plane(string log)
            {
                var m = System.Text.RegularExpressions.Regex.Matches(log, @"data plane \S+: sent (\d+), received (\d+) messages; (\d+) went through Akka");
                return m.Count == 0 ? (0, 0, 0) : (long.Parse(m[^1].Groups[1].Value), long.Parse(m[^1].Groups[2].Value), long.Parse(m[^1].Groups[3].Value));
            }
            // (each plane says what it moved every 5 s: the run may end before the last line)
            var (genSent, _, genAkka) = Plane(cluster.Log("gen.log"));
            var (aSent, aReceived, _) = Plane(a);
            var (bSent, bReceived, _) = Plane(b);
            for (var wait = DateTime.UtcNow.AddSeconds(15); !(genSent > 0 && aReceived > 0 && bReceived > 0 && aSent > 0 && bSent > 0) && DateTime.UtcNow < wait; )
            {
                Thread.Sleep(500);
                (genSent, _, genAkka) = Plane(cluster.Log("gen.log"));
                (aSent, aReceived, _) = Plane(cluster.Log("studentA.log"));
                (bSent, bReceived, _) = Plane(cluster.Log("studentB.log"));
            }
            Assert.True(genSent > 0 && aReceived > 0 && bReceived > 0 && aSent > 0 && bSent > 0,
                $"the data plane did not carry the run: generator sent {genSent}, students sent {aSent}/{bSent} and received {aReceived}/{bReceived}");
            Assert.Equal(0, genAkka);
        }
        if (killed is not null)
        {
            // replica 1 came back on the survivor from a checkpoint, not from the start, and its
            // peer, which had gone on to wait at a later step, stepped back to it
            var survivor = cluster.Log(killed == cluster.Processes[2] ? "studentB.log" : "studentA.log");
            var resumed = System.Text.RegularExpressions.Regex.Match(survivor, @"two/student/1: student ready at step (\d+)");
            Assert.True(resumed.Success && long.Parse(resumed.Groups[1].Value) >= checkpointEvery, "replica 1 did not resume from a checkpoint on the survivor: " + Logs());
            Assert.Contains("to stay in lockstep", survivor);
        }

        // the references run as processes too, computing as the nodes do (one libtorch thread)
        var replicated = Path.Combine(work, "runs", "two", "student.pt");
        if (killed is null)
        {
            // against one process training on the combined batch (summation order differs: float tolerance)
            RunToEnd(cluster, "engine.log", "run", spec, "--engine", "--runs-dir", Path.Combine(work, "engine"), "--run-id", "one");
            AssertSameWeights(replicated, Path.Combine(work, "engine", "one", "student.pt"), bits: false, "replicas differ from the combined batch");
        }
        else
        {
            // against the same two replicas run without a failure (embedded, one process): every
            // step after the kill was recomputed from checkpoints, so the weights are the same bits
            RunToEnd(cluster, "embedded.log", "run", spec, "--runs-dir", Path.Combine(work, "embedded"), "--run-id", "ref");
            AssertSameWeights(replicated, Path.Combine(work, "embedded", "ref", "student.pt"), bits: true, "the run with a killed replica differs from the uninterrupted one");
        }
    }

    private static void Signal(Process p, string signal)
    {
        using var kill = Process.Start("kill", [$"-{signal}", p.Id.ToString()])!;
        kill.WaitForExit();
        Assert.True(kill.ExitCode == 0, $"kill -{signal} {p.Id} failed");
    }

    /// <summary>The student step that `submit --follow` printed last.</summary>
    private static long StudentStep(string work)
    {
        var path = Path.Combine(work, "submit.log");
        if (!File.Exists(path)) return 0;
        var m = System.Text.RegularExpressions.Regex.Matches(File.ReadAllText(path), @"step (\d+)/\d+");
        return m.Count == 0 ? 0 : long.Parse(m[^1].Groups[1].Value);
    }
}
