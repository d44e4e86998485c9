using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Cluster.Tests.Cluster;

/// <summary>
/// PostgreSQL stopped for 45 s in the middle of a run, with a submit during the outage, on a seed
/// and a GPU node in their own processes. The submit is told the journal is unavailable; the run
/// completes every step; the control plane answers again within 30 s of the database's return.
/// The server is a private one (scripts/postgres.sh on a port of its own), so that no other test
/// loses its database.
/// </summary>
[Collection(ProcessLanes.B)]
public sealed class PostgresOutageProcessTests
{
    private static string Bin() =>
        Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")).Where(Directory.Exists).OrderBy(d => d).Last();

    private static void PgCtl(string dir, params string[] args)
    {
        // the server refuses to run as root: as the package's postgres user then (as scripts/postgres.sh does)
        var root = Environment.UserName == "root";
        var exe = Path.Combine(Bin(), "pg_ctl");
        string[] all = ["-D", dir, .. args];
        using var p = Process.Start(new ProcessStartInfo(root ? "runuser" : exe, root ? ["-u", "postgres", "--", exe, .. all] : all)
            { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"pg_ctl {string.Join(' ', args)}: {output}");
    }

    private static string StartServer(string dir, int port)
    {
        var psi = new ProcessStartInfo("bash", [Path.Combine(Repo.Root(), "scripts", "postgres.sh")]) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["CLUSTERDISTILL_PG_PORT"] = port.ToString();
        psi.Environment["CLUSTERDISTILL_PG_DIR"] = dir;
        using var p = Process.Start(psi)!;
        var conn = p.StandardOutput.ReadToEnd().Trim();
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, "scripts/postgres.sh: " + err);
        return conn;
    }

    private static (int Exit, string Output) Run(ProcessCluster cluster, string log, TimeSpan limit, params string[] args)
    {
        var p = cluster.Start(cluster.SeedBin, log, args);
        Assert.True(p.WaitForExit(limit), $"{args[0]} did not finish within {limit.TotalSeconds} s: " + cluster.Logs(_ => true, 30));
        p.WaitForExit();
        return (p.ExitCode, cluster.Log(log));
    }

    [Fact]
    public void Should_complete_a_run_through_a_45_s_outage_and_answer_again_within_30_s_of_the_return()
    {
        Torch.Init();
        var port = 55400 + Environment.ProcessId % 200;
        var dir = Path.Combine(Path.GetTempPath(), $"cd-pg-outage-{Guid.NewGuid():N}");
        var conn = StartServer(dir, port);
        try
        {
            using var cluster = new ProcessCluster("outage", conn);
            var teacher = cluster.SaveTeacher(51);
            var spec = Path.Combine(cluster.Work, "outage.yaml");
            File.WriteAllText(spec, ProcessCluster.TinyDafl("outage", 8, teacher, 400, 200, "{checkpoint_every: 10}"));
            var seedPort = TestPorts.Block(2);
            var seeds = $"127.0.0.1:{seedPort}";
            cluster.Start(cluster.SeedBin, "seed.log", ["serve", "--port", seedPort.ToString(), "--http-port", cluster.HttpPort.ToString(), .. cluster.Common]);
            Thread.Sleep(3000);
            cluster.Start(cluster.GpuBin, "gpu.log", ["join", "--seeds", seeds, "--port", (seedPort + 1).ToString(), .. cluster.Common]);
            cluster.WaitUntilUp(DateTime.UtcNow.AddMinutes(2), "gpu.log");

            var follow = cluster.Start(cluster.SeedBin, "run.log", ["submit", spec, "--server", cluster.Server, "--run-id", "o1", "--follow"]);
            var deadline = DateTime.UtcNow.AddMinutes(3);
            while (!Regex.Matches(cluster.Log("run.log"), @"training step (\d+)/").Any(m => int.Parse(m.Groups[1].Value) >= 40))
            {
                Assert.True(DateTime.UtcNow < deadline && !follow.HasExited, "the run did not train: " + cluster.Logs(_ => true, 30));
                Thread.Sleep(300);
            }

            PgCtl(dir, "stop", "-m", "fast", "-w");
            var down = Stopwatch.StartNew();
            // the run's status says why it stands still: an entity whose journal write failed tells the coordinator
            var statusFile = Path.Combine(cluster.Work, "runs", "o1", "status.json");
            string Shown() { try { return File.ReadAllText(statusFile); } catch (IOException) { return ""; } }
            while (!Shown().Contains("its journal is unavailable"))
            {
                Assert.True(down.Elapsed < TimeSpan.FromSeconds(30), "the run's status did not say that its journal is unavailable: " + Shown() + cluster.Logs(_ => true, 20));
                Thread.Sleep(200);
            }
            // a submit while the database is down: told so, at once, not a timeout
            var (exit, output) = Run(cluster, "submit-down.log", TimeSpan.FromSeconds(60), "submit", spec, "--server", cluster.Server, "--run-id", "o2");
            Assert.True(exit == 1 && output.Contains("journal is unavailable"), $"exit {exit}: {output}");
            Thread.Sleep(TimeSpan.FromSeconds(45) - down.Elapsed);
            PgCtl(dir, "start", "-w", "-t", "60", "-l", Path.Combine(dir, "server.log"),
                "-o", $"-p {port} -c listen_addresses=127.0.0.1 -k /tmp -c fsync=off -c max_connections=200");
            var back = Stopwatch.StartNew();

            // the control plane answers again: status, then the same submit is taken
            int statusExit;
            var attempt = 0;
            do (statusExit, output) = Run(cluster, $"status-{++attempt}.log", TimeSpan.FromSeconds(60), "status", "--server", cluster.Server);
            while (statusExit != 0 && back.Elapsed < TimeSpan.FromSeconds(60));
            Assert.True(statusExit == 0, "status did not answer after the database came back: " + output);
            Assert.True(back.Elapsed < TimeSpan.FromSeconds(30), $"the control plane answered {back.Elapsed.TotalSeconds:F0} s after the database came back");
            (exit, output) = Run(cluster, "submit-back.log", TimeSpan.FromSeconds(60), "submit", spec, "--server", cluster.Server, "--run-id", "o2");
            Assert.True(exit == 0, $"the submit after the outage: exit {exit}: {output}");

            Assert.True(ProcessCluster.Ended(follow, TimeSpan.FromMinutes(6)), "the run did not complete after the outage: " + cluster.Logs(_ => true, 40));
            follow.WaitForExit();
            Assert.True(follow.ExitCode == 0, "the run failed: " + cluster.Logs(_ => true, 40));
            using var result = JsonDocument.Parse(File.ReadAllText(Path.Combine(cluster.Work, "runs", "o1", "result.json")));
            Assert.Equal(400, result.RootElement.GetProperty("steps").GetInt64());
            // every step's metrics row up to the end, none missing after the outage (rows repeat where a step was redone from its checkpoint)
            var steps = File.ReadAllLines(Path.Combine(cluster.Work, "runs", "o1", "metrics.csv")).Skip(1)
                .Select(l => l.Split(',')).Where(c => c[0].StartsWith("student", StringComparison.Ordinal)).Select(c => long.Parse(c[1])).ToHashSet();
            Assert.Contains(400L, steps);
        }
        finally
        {
            try { PgCtl(dir, "stop", "-m", "immediate"); } catch (Exception) { }
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }
}
