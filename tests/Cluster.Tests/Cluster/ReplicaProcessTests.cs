using System.Diagnostics;
using Distill.Engine.Models;
using Npgsql;
using static TorchSharp.torch;

namespace Cluster.Tests.Cluster;

/// <summary>
/// Two student replicas in two GPU-node processes (the layout puts the generator and teacher on a
/// third), all-reducing gradients over Akka.Remote, must reach the weights of one process training
/// on the combined batch, to float tolerance. Real processes, a PostgreSQL journal, bounded in time.
/// </summary>
[Collection("mnist")]
public sealed class ReplicaProcessTests
{
    [Fact]
    public void Should_reach_the_combined_batch_weights_with_two_replicas_in_two_processes()
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
            dafl: {"{"}steps: 12, batch_size: 32, generator_width: 8, generator_lr: 0.02, activation: code, entropy: code, eval_every: 12{"}"}
            cluster: {"{"}replicas: 2, checkpoint_every: 6{"}"}
            guard: {"{"}enabled: false{"}"}
            """);

        var seedBin = Path.Combine(root, "src/Cluster.Seed/bin/Release/net10.0/Cluster.Seed");
        var gpuBin = Path.Combine(root, "src/Cluster.GpuNode/bin/Release/net10.0/Cluster.GpuNode");
        var port = 5600 + Environment.ProcessId % 300 * 4;
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
            Assert.True(submit.WaitForExit(TimeSpan.FromMinutes(6)), "the two-replica run did not finish in 6 minutes: " + Logs(work));
            submit.WaitForExit();
            Assert.True(submit.ExitCode == 0, "submit --follow failed: " + Logs(work));

            // each student process hosted one replica: two processes really exchanged gradients
            var a = File.ReadAllText(Path.Combine(work, "studentA.log"));
            var b = File.ReadAllText(Path.Combine(work, "studentB.log"));
            bool Hosts(string log, int replica) => log.Contains($"two/student/{replica}: student ready");
            Assert.True(Hosts(a, 0) && Hosts(b, 1) || Hosts(a, 1) && Hosts(b, 0), "the replicas were not on two processes: " + Logs(work));

            var engine = new StringWriter();
            Assert.Equal(0, global::Cluster.Seed.Commands.CommandLine.Dispatch(
                ["run", spec, "--engine", "--runs-dir", Path.Combine(work, "engine"), "--run-id", "one"], engine, engine));
            using var replicated = ModelFactory.Create("lenet5-half", 1, 32, 10);
            replicated.load(Path.Combine(work, "runs", "two", "student.pt"));
            using var single = ModelFactory.Create("lenet5-half", 1, 32, 10);
            single.load(Path.Combine(work, "engine", "one", "student.pt"));
            foreach (var (p, q) in replicated.parameters().Zip(single.parameters()))
                Assert.True(p.allclose(q, rtol: 1e-4, atol: 1e-6), $"replicas differ from the combined batch by {(p - q).abs().max().item<float>():G3}");
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

    private static string Logs(string work) =>
        string.Join("\n", Directory.GetFiles(work, "*.log").Select(f => $"--- {Path.GetFileName(f)}\n" +
            string.Join("\n", File.ReadAllLines(f).Where(l => !l.Contains("[INFO]") || l.Contains("student")).TakeLast(15))));
}
