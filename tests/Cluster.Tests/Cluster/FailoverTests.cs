using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The multi-process failover demo as a test: real seed and GPU-node processes on 127.0.0.1, a
/// PostgreSQL journal, kill -9 of the node holding the student, then of every process
/// (scripts/failover-demo.sh does the work and the checks; this bounds it in time and cleans up).
/// For DAFL (a generator entity's batches) and for Hinton KD on real data (the source entity's
/// loader and the teacher entity's soft labels). specs/failover-demo-deepinversion.yaml runs the
/// same script by hand (docs/cluster.md): about 3 minutes here, more than the other two together;
/// a round resumed mid-way is checked in-process by EntityProtocolTests.
/// </summary>
public abstract class FailoverTests
{
    protected static void Demo(string spec)
    {
        var root = Repo.Root();
        var work = Path.Combine(Path.GetTempPath(), $"cd-failover-{Guid.NewGuid():N}");
        var psi = new ProcessStartInfo("setsid", ["bash", Path.Combine(root, "scripts", "failover-demo.sh"), Path.Combine(root, "specs", spec)])
        {
            WorkingDirectory = root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.Environment["SKIP_BUILD"] = "1";   // the test run built everything already
        psi.Environment["SKIP_STATUS"] = "1";  // the status CLI's own tests are elsewhere
        ProcessCluster.OneThread(psi);          // the script's nodes and reference run
        psi.Environment["WORK"] = work;
        psi.Environment["PORT_BASE"] = TestPorts.Block(3).ToString();
        psi.Environment["HTTP_PORT"] = TestPorts.Block(1).ToString();
        using var p = Process.Start(psi)!;
        var output = new System.Text.StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        try
        {
            if (!p.WaitForExit(TimeSpan.FromMinutes(15)))
            {
                // the script's trap kills its nodes on TERM; the process group catches anything left
                Process.Start("kill", ["-TERM", $"-{p.Id}"])!.WaitForExit();
                if (!p.WaitForExit(TimeSpan.FromSeconds(10))) Process.Start("kill", ["-KILL", $"-{p.Id}"])!.WaitForExit();
                Assert.Fail($"failover demo did not finish within 15 minutes:\n{output}");
            }
            p.WaitForExit();
            var text = output.ToString();
            Assert.True(p.ExitCode == 0, $"failover demo failed (exit {p.ExitCode}):\n{text}");
            var summary = Regex.Match(text, @"failover-demo: killed_at=(\d+) min_after=(\d+) failover_s=(\d+) full_kill_at=(\d+) resumed_at=(\d+) final=([\d.]+) reference=([\d.]+) ok=1");
            Assert.True(summary.Success, text);
            long G(int i) => long.Parse(summary.Groups[i].Value);
            // The kill steps are what status.json showed, which trails the student by up to a few steps
            // (progress every 5 steps); a checkpoint written in that gap is restored from, so a resumed
            // step may sit just above the observed kill step. What must hold: no step back beyond
            // one checkpoint interval (25), and the full restart resumes rather than starting over.
            Assert.True(G(1) - G(2) <= 25, $"after kill -9 of its node the student went back from {G(1)} to {G(2)}");
            Assert.True(G(4) - G(5) <= 25 && G(5) > 0, $"after the full restart the run went back from {G(4)} to {G(5)}");
            Assert.InRange(double.Parse(summary.Groups[6].Value) - double.Parse(summary.Groups[7].Value), -0.5, 0.5);
        }
        finally
        {
            try { Directory.Delete(work, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }
}

/// <summary>The failover demo with DAFL: the generator entity's batches.</summary>
[Collection(ProcessLanes.A)]
public sealed class DaflFailoverTests : FailoverTests
{
    [Fact]
    public void Should_resume_the_student_on_the_survivor_after_kill_9_and_the_whole_run_after_a_full_restart() => Demo("failover-demo.yaml");
}

/// <summary>The failover demo with Hinton KD on real data: the source entity's loader and the teacher entity's soft labels.</summary>
[Collection(ProcessLanes.B)]
public sealed class KdFailoverTests : FailoverTests
{
    [Fact]
    public void Should_resume_the_student_on_the_survivor_after_kill_9_and_the_whole_run_after_a_full_restart() => Demo("failover-demo-kd.yaml");
}
