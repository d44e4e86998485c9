using System.Diagnostics;
using Distill.Engine.Models;
using Npgsql;
using static TorchSharp.torch;

namespace Cluster.Tests.Cluster;

/// <summary>
/// Two student replicas in two GPU-node processes (the layout puts the generator and teacher on a
/// third), all-reducing gradients over Akka.Remote, must reach the weights of one process training
/// on the combined batch, to float tolerance; also when one replica's node is killed mid-run and
/// the replica comes back on the other node from its checkpoint while its peer is ahead. Real
/// processes, a PostgreSQL journal, bounded in time.
/// </summary>
[Collection("mnist")]
public sealed class ReplicaProcessTests
{
    [Fact]
    public void Should_reach_the_combined_batch_weights_with_two_replicas_in_two_processes() =>
        RunTwoReplicas(steps: 12, checkpointEvery: 6, killAtStep: null);

    [Fact]
    public void Should_keep_the_replicas_in_lockstep_when_one_replica_node_is_killed_mid_run() =>
        RunTwoReplicas(steps: 400, checkpointEvery: 25, killAtStep: 60);

    private static void RunTwoReplicas(int steps, int checkpointEvery, int? killAtStep)
    {
        Torch.Init();
        var root = Repo.Root();
        var pg = Environment.GetEnvironmentVariable("CLUSTERDISTILL_PG")
                 ?? throw new InvalidOperationException("CLUSTERDISTILL_PG is not set: run the tests through scripts/test.sh");
        var work = Path.Combine(Path.GetTempPath(), $"cd-replicas-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        var db = $"cd_replicas_{Guid.NewGuid():N}"[..24];
        using (var c = new NpgsqlConnection(pg)) { c.Open(); using var cmd = c.CreateCommand(); cmd.CommandText = $"CREATE DATABASE {db}"; cmd.ExecuteNonQuery(); }
        var conn = "postgres:" + pg.Replace("Database=clusterdistill", $"Database={db}");

        manual_seed(21);
        using (var teacher = ModelFactory.Create("lenet5", 1, 32, 10)) teacher.save(Path.Combine(work, "teacher.pt"));
        var spec = Path.Combine(work, "replicas.yaml");
        File.WriteAllText(spec, $"""
            name: replicas
            method: dafl
            seed: 5
            data: {"{"}name: mnist, image_size: 32{"}"}
            teacher:
              arch: lenet5
              checkpoint: {Path.Combine(work, "teacher.pt")}
            student:
              arch: lenet5-half
              train: {"{"}optimizer: adam, lr: 0.002{"}"}
            dafl: {"{"}steps: {steps}, batch_size: 32, generator_width: 8, generator_lr: 0.02, activation: code, entropy: code, eval_every: {steps}{"}"}
            cluster: {"{"}replicas: 2, checkpoint_every: {checkpointEvery}{"}"}
            guard: {"{"}enabled: false{"}"}
            """);

        var seedBin = Path.Combine(root, "src/Cluster.Seed/bin/Release/net10.0/Cluster.Seed");
        var gpuBin = Path.Combine(root, "src/Cluster.GpuNode/bin/Release/net10.0/Cluster.GpuNode");
        var port = 5600 + Environment.ProcessId % 300 * 8 + (killAtStep is null ? 0 : 4);
        string[] common = ["--db", conn, "--store", Path.Combine(work, "store"), "--runs-dir", Path.Combine(work, "runs")];
        var processes = new List<Process>();
        Process Start(string exe, string log, params string[] args)
        {
            var psi = new ProcessStartInfo(exe, args) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = work };
            var p = Process.Start(psi)!;
            var writer = new StreamWriter(Path.Combine(work, log)) { AutoFlush = true };
            p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (writer) writer.WriteLine(e.Data); };
            p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (writer) writer.WriteLine(e.Data); };
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
            processes.Add(p);
            return p;
        }
        try
        {
            Start(seedBin, "seed.log", ["serve", "--port", port.ToString(), .. common]);
            Thread.Sleep(3000);
            var seeds = $"127.0.0.1:{port}";
            Start(gpuBin, "gen.log", ["join", "--seeds", seeds, "--port", (port + 1).ToString(), "--hosts", "generator,teacher", .. common]);
            Start(gpuBin, "studentA.log", ["join", "--seeds", seeds, "--port", (port + 2).ToString(), "--hosts", "student", .. common]);
            Start(gpuBin, "studentB.log", ["join", "--seeds", seeds, "--port", (port + 3).ToString(), "--hosts", "student", .. common]);
            // the layout only holds once every node's shard regions are registered: wait for all three
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (new[] { "gen.log", "studentA.log", "studentB.log" }.Any(f => !File.ReadAllText(Path.Combine(work, f)).Contains("[gpu-node] up at")))
            {
                Assert.True(DateTime.UtcNow < deadline, "GPU nodes did not come up: " + Logs(work));
                Thread.Sleep(250);
            }
            Thread.Sleep(2000);
            var submit = Start(seedBin, "submit.log", ["submit", spec, "--seeds", seeds, "--run-id", "two", "--follow"]);
            Process? killed = null;
            if (killAtStep is { } at)
            {
                // kill -9 the node of replica 1 once the run is past the first checkpoints
                while (StudentStep(work) < at)
                {
                    Assert.True(DateTime.UtcNow < deadline.AddMinutes(3) && !submit.HasExited, $"the run did not reach step {at}: " + Logs(work));
                    Thread.Sleep(100);
                }
                var hostsOne = File.ReadAllText(Path.Combine(work, "studentA.log")).Contains("two/student/1: student ready") ? 2 : 3;
                killed = processes[hostsOne];
                killed.Kill(entireProcessTree: true);
                killed.WaitForExit();
            }
            Assert.True(submit.WaitForExit(TimeSpan.FromMinutes(6)), "the two-replica run did not finish in 6 minutes: " + Logs(work));
            submit.WaitForExit();
            Assert.True(submit.ExitCode == 0, "submit --follow failed: " + Logs(work));

            // each student process hosted one replica: two processes really exchanged gradients
            var a = File.ReadAllText(Path.Combine(work, "studentA.log"));
            var b = File.ReadAllText(Path.Combine(work, "studentB.log"));
            bool Hosts(string log, int replica) => log.Contains($"two/student/{replica}: student ready at step 0");
            Assert.True(Hosts(a, 0) && Hosts(b, 1) || Hosts(a, 1) && Hosts(b, 0), "the replicas were not on two processes: " + Logs(work));
            if (killed is not null)
            {
                // replica 1 came back on the survivor from a checkpoint, not from the start, and its
                // peer, which had gone on to wait at a later step, stepped back to it
                var survivor = File.ReadAllText(Path.Combine(work, killed == processes[2] ? "studentB.log" : "studentA.log"));
                var resumed = System.Text.RegularExpressions.Regex.Match(survivor, @"two/student/1: student ready at step (\d+)");
                Assert.True(resumed.Success && long.Parse(resumed.Groups[1].Value) >= checkpointEvery, "replica 1 did not resume from a checkpoint on the survivor: " + Logs(work));
                Assert.Contains("to stay in lockstep", survivor);
            }

            using var replicated = ModelFactory.Create("lenet5-half", 1, 32, 10);
            replicated.load(Path.Combine(work, "runs", "two", "student.pt"));
            var output = new StringWriter();
            if (killed is null)
            {
                // against one process training on the combined batch (summation order differs: float tolerance)
                Assert.Equal(0, global::Cluster.Seed.Commands.CommandLine.Dispatch(
                    ["run", spec, "--engine", "--runs-dir", Path.Combine(work, "engine"), "--run-id", "one"], output, output));
                using var single = ModelFactory.Create("lenet5-half", 1, 32, 10);
                single.load(Path.Combine(work, "engine", "one", "student.pt"));
                foreach (var (p, q) in replicated.parameters().Zip(single.parameters()))
                    Assert.True(p.allclose(q, rtol: 1e-4, atol: 1e-6), $"replicas differ from the combined batch by {(p - q).abs().max().item<float>():G3}");
            }
            else
            {
                // against the same two replicas run without a failure (embedded, one process): every
                // step after the kill was recomputed from checkpoints, so the weights are the same bits
                Assert.Equal(0, global::Cluster.Seed.Commands.CommandLine.Dispatch(
                    ["run", spec, "--runs-dir", Path.Combine(work, "embedded"), "--run-id", "ref"], output, output));
                using var uninterrupted = ModelFactory.Create("lenet5-half", 1, 32, 10);
                uninterrupted.load(Path.Combine(work, "embedded", "ref", "student.pt"));
                foreach (var (p, q) in replicated.parameters().Zip(uninterrupted.parameters()))
                    Assert.True(p.eq(q).all().item<bool>(), $"the run with a killed replica differs from the uninterrupted one by {(p - q).abs().max().item<float>():G3}");
            }
        }
        finally
        {
            foreach (var p in processes)
            {
                try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                p.Dispose();
            }
            try { using var c = new NpgsqlConnection(pg); c.Open(); using var cmd = c.CreateCommand(); cmd.CommandText = $"DROP DATABASE IF EXISTS {db} WITH (FORCE)"; cmd.ExecuteNonQuery(); }
            catch (NpgsqlException) { }
            try { Directory.Delete(work, true); } catch (IOException) { }
        }
    }

    /// <summary>The student step that `submit --follow` printed last.</summary>
    private static long StudentStep(string work)
    {
        var path = Path.Combine(work, "submit.log");
        if (!File.Exists(path)) return 0;
        var m = System.Text.RegularExpressions.Regex.Matches(File.ReadAllText(path), @"step (\d+)/\d+");
        return m.Count == 0 ? 0 : long.Parse(m[^1].Groups[1].Value);
    }

    private static string Logs(string work) =>
        string.Join("\n", Directory.GetFiles(work, "*.log").Select(f => $"--- {Path.GetFileName(f)}\n" +
            string.Join("\n", File.ReadAllLines(f).Where(l => !l.Contains("[INFO]") || l.Contains("student")).TakeLast(15))));
}
