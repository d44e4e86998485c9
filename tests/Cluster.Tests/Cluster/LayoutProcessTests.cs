using System.Diagnostics;
using System.Text.Json;
using Distill.Engine.Models;
using Npgsql;
using static TorchSharp.torch;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The spec's layout places each run's entities: two GPU-node processes in pools "east" and
/// "west" (each able to host every kind) and two runs with opposite layouts on the same cluster,
/// one with a replica in each pool. Real processes, a PostgreSQL journal, bounded in time.
/// </summary>
[Collection("mnist")]
public sealed class LayoutProcessTests
{
    [Fact]
    public void Should_place_each_runs_entities_in_the_pools_its_spec_names()
    {
        Torch.Init();
        var root = Repo.Root();
        var pg = Environment.GetEnvironmentVariable("CLUSTERDISTILL_PG")
                 ?? throw new InvalidOperationException("CLUSTERDISTILL_PG is not set: run the tests through scripts/test.sh");
        var work = Path.Combine(Path.GetTempPath(), $"cd-layout-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        var db = $"cd_layout_{Guid.NewGuid():N}"[..24];
        using (var c = new NpgsqlConnection(pg)) { c.Open(); using var cmd = c.CreateCommand(); cmd.CommandText = $"CREATE DATABASE {db}"; cmd.ExecuteNonQuery(); }
        var conn = "postgres:" + pg.Replace("Database=clusterdistill", $"Database={db}");

        manual_seed(21);
        using (var teacher = ModelFactory.Create("lenet5", 1, 32, 10)) teacher.save(Path.Combine(work, "teacher.pt"));
        string Spec(string name, int replicas, string layout)
        {
            var path = Path.Combine(work, name + ".yaml");
            File.WriteAllText(path, $$"""
                name: {{name}}
                method: dafl
                seed: 5
                data: {name: mnist, image_size: 32}
                teacher:
                  arch: lenet5
                  checkpoint: {{Path.Combine(work, "teacher.pt")}}
                student:
                  arch: lenet5-half
                  train: {optimizer: adam, lr: 0.002}
                dafl: {steps: 10, batch_size: 16, generator_width: 8, generator_lr: 0.02, activation: code, entropy: code, eval_every: 10}
                cluster: {replicas: {{replicas}}, checkpoint_every: 5, layout: {{layout}} }
                """);
            return path;
        }
        var specA = Spec("a", 1, "{generator: east, teacher: east, student: west}");
        var specB = Spec("b", 2, "{generator: west, teacher: west, student: [east, west]}");

        var seedBin = Path.Combine(root, "src/Cluster.Seed/bin/Release/net10.0/Cluster.Seed");
        var gpuBin = Path.Combine(root, "src/Cluster.GpuNode/bin/Release/net10.0/Cluster.GpuNode");
        var port = 7800 + Environment.ProcessId % 300 * 4;
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
            Start(gpuBin, "east.log", ["join", "--seeds", seeds, "--port", (port + 1).ToString(), "--pool", "east", .. common]);
            Start(gpuBin, "west.log", ["join", "--seeds", seeds, "--port", (port + 2).ToString(), "--pool", "west", .. common]);
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (new[] { "east.log", "west.log" }.Any(f => !File.ReadAllText(Path.Combine(work, f)).Contains("[gpu-node] up at")))
            {
                Assert.True(DateTime.UtcNow < deadline, "GPU nodes did not come up: " + Logs(work));
                Thread.Sleep(250);
            }
            Thread.Sleep(2000);
            var a = Start(seedBin, "submit-a.log", ["submit", specA, "--seeds", seeds, "--run-id", "ra", "--follow"]);
            var b = Start(seedBin, "submit-b.log", ["submit", specB, "--seeds", seeds, "--run-id", "rb", "--follow"]);
            Assert.True(a.WaitForExit(TimeSpan.FromMinutes(4)) && b.WaitForExit(TimeSpan.FromMinutes(2)), "the runs did not finish: " + Logs(work));
            a.WaitForExit();
            b.WaitForExit();
            Assert.True(a.ExitCode == 0 && b.ExitCode == 0, "a run failed: " + Logs(work));

            var east = File.ReadAllText(Path.Combine(work, "east.log"));
            var west = File.ReadAllText(Path.Combine(work, "west.log"));
            void On(string log, string other, string entity, string what)
            {
                Assert.True(log.Contains($"{entity}: {what}"), $"{entity} is not where its spec's layout puts it: " + Logs(work));
                Assert.False(other.Contains($"{entity}: {what}"), $"{entity} also ran in the other pool: " + Logs(work));
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
            string.Join("\n", File.ReadAllLines(f).Where(l => !l.Contains("[INFO]") || l.Contains("ready") || l.Contains("loaded") || l.Contains("pool")).TakeLast(20))));
}
