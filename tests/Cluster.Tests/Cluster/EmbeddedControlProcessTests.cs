using System.Diagnostics;
using System.Text.Json;

namespace Cluster.Tests.Cluster;

/// <summary>
/// An embedded `run` is stopped by Ctrl+C within seconds and resumes with its --run-id; `cancel`
/// ends it for good, whether a `run` process serves it or not; Ctrl+C as it ends leaves it complete.
/// Real `Cluster.Seed` processes.
/// </summary>
[Collection(ProcessLanes.A)]
public sealed class EmbeddedControlProcessTests
{
    private static string Spec(ProcessCluster cluster, string name, int steps, string extra = "")
    {
        var teacher = cluster.SaveTeacher(41);
        var path = Path.Combine(cluster.Work, name + ".yaml");
        File.WriteAllText(path, ProcessCluster.TinyDafl(name, 7, teacher, steps, steps, "{checkpoint_every: 10}") + extra);
        return path;
    }

    private static void WaitFor(ProcessCluster cluster, string log, Func<string, bool> ok, string what, int seconds = 120)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (!ok(cluster.Log(log)))
        {
            Assert.True(DateTime.UtcNow < deadline, $"{what}: " + cluster.Logs(_ => true, 30));
            Thread.Sleep(300);
        }
    }

    private static bool Training(string log) =>
        System.Text.RegularExpressions.Regex.Matches(log, @"training step (\d+)/").Any(m => int.Parse(m.Groups[1].Value) >= 15);

    private static void Signal(Process p, string signal)
    {
        using var kill = Process.Start("kill", [$"-{signal}", p.Id.ToString()]);
        kill.WaitForExit();
    }

    [Fact]
    public void Should_stop_on_ctrl_c_within_seconds_and_resume_with_the_same_run_id()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("ctrlc");
        var spec = Spec(cluster, "ctrlc", steps: 200);
        var runs = Path.Combine(cluster.Work, "runs");
        var first = cluster.StartInterruptible(cluster.SeedBin, "run-1.log", ["run", spec, "--runs-dir", runs, "--run-id", "r1"]);
        WaitFor(cluster, "run-1.log", Training, "the run did not start training");
        var masks = ProcessCluster.SignalMasks(first.Id);
        var clock = Stopwatch.StartNew();
        Signal(first, "INT");
        Assert.True(ProcessCluster.Ended(first, TimeSpan.FromSeconds(30)), "Ctrl+C did not stop the run within 30 s: " + cluster.Logs(_ => true, 30));
        first.WaitForExit();
        Assert.True(first.ExitCode == 130, $"exit {first.ExitCode} after SIGINT ({masks}): " + cluster.Logs(_ => true, 20));
        Assert.Contains("interrupted; its state is saved", cluster.Log("run-1.log"));
        Assert.DoesNotContain("coordinator did not answer", cluster.Log("run-1.log"));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"Ctrl+C took {clock.Elapsed.TotalSeconds:F1} s");

        var again = cluster.Start(cluster.SeedBin, "run-2.log", ["run", spec, "--runs-dir", runs, "--run-id", "r1"]);
        Assert.True(ProcessCluster.Ended(again, TimeSpan.FromMinutes(4)), "the resumed run did not finish: " + cluster.Logs(_ => true, 30));
        again.WaitForExit();
        Assert.True(again.ExitCode == 0, "the resumed run failed: " + cluster.Logs(_ => true, 30));
        using var result = JsonDocument.Parse(File.ReadAllText(Path.Combine(runs, "r1", "result.json")));
        Assert.Equal(200, result.RootElement.GetProperty("steps").GetInt64());
        // it resumed: the second process did not start again from step 0
        Assert.DoesNotContain("training step 5/200", cluster.Log("run-2.log"));
        // what the teacher entity loaded is in the run's events.log (the entity's own is beside it, in teacher/)
        Assert.Matches(@"r1/teacher/0 on \S+: teacher loaded from .*teacher\.pt: ", File.ReadAllText(Path.Combine(runs, "r1", "events.log")));

        // a run stopped by Ctrl+C and then cancelled through its journal keeps the figures it stopped at
        var stopped = cluster.StartInterruptible(cluster.SeedBin, "run-3.log", ["run", spec, "--runs-dir", runs, "--run-id", "r2"]);
        WaitFor(cluster, "run-3.log", Training, "the second run did not start training");
        Signal(stopped, "INT");
        Assert.True(ProcessCluster.Ended(stopped, TimeSpan.FromSeconds(30)), "Ctrl+C did not stop the second run: " + cluster.Logs(_ => true, 30));
        stopped.WaitForExit();
        long StepShown() { using var s = JsonDocument.Parse(File.ReadAllText(Path.Combine(runs, "r2", "status.json"))); return s.RootElement.GetProperty("step").GetInt64(); }
        var before = StepShown();
        Assert.True(before > 0, $"status.json shows step {before} for a run stopped after step 15");
        var cancel = cluster.Start(cluster.SeedBin, "cancel-3.log", ["cancel", "r2", "--runs-dir", runs]);
        Assert.True(ProcessCluster.Ended(cancel, TimeSpan.FromSeconds(90)), "cancel did not finish: " + cluster.Logs(_ => true, 30));
        cancel.WaitForExit();
        Assert.True(cancel.ExitCode == 0, "cancel failed: " + cluster.Logs(_ => true, 30));
        using (var status = JsonDocument.Parse(File.ReadAllText(Path.Combine(runs, "r2", "status.json"))))
            Assert.Equal("cancelled", status.RootElement.GetProperty("state").GetString());
        Assert.Equal(before, StepShown());

        // Ctrl+C as the run ends finds it complete: its result and exit 0, not "interrupted" (Akka's own
        // shutdown on SIGINT stops the coordinator, so without its files the command could not tell)
        var shortSpec = Spec(cluster, "ends", steps: 30);
        var ending = cluster.StartInterruptible(cluster.SeedBin, "run-4.log", ["run", shortSpec, "--runs-dir", runs, "--run-id", "r3"]);
        var resultFile = Path.Combine(runs, "r3", "result.json");
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (!File.Exists(resultFile) && !ending.HasExited)
        {
            Assert.True(DateTime.UtcNow < deadline, "the short run did not finish: " + cluster.Logs(_ => true, 30));
            Thread.Sleep(10);
        }
        Signal(ending, "INT");
        Assert.True(ProcessCluster.Ended(ending, TimeSpan.FromSeconds(30)), "the finished run's process did not end: " + cluster.Logs(_ => true, 30));
        ending.WaitForExit();
        Assert.True(ending.ExitCode == 0, $"exit {ending.ExitCode} for a run that completed: " + cluster.Log("run-4.log"));
        Assert.Matches(@"\[result\] student \d+\.\d\d% test, teacher \d+\.\d\d%, \d+ s -> .*r3/result\.json", cluster.Log("run-4.log"));
        Assert.DoesNotContain("interrupted", cluster.Log("run-4.log"));
    }

    [Fact]
    public void Should_cancel_an_embedded_run_for_good_through_its_process_or_its_journal()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("cancel");
        // with compare_baseline: its baseline's run is cancelled with it
        var spec = Spec(cluster, "cancel", steps: 5000, "\ncompare_baseline: true\nbaseline_train: {steps: 20000, batch_size: 32}\n");
        var runs = Path.Combine(cluster.Work, "runs");
        var run = cluster.Start(cluster.SeedBin, "run.log", ["run", spec, "--runs-dir", runs, "--run-id", "c1"]);
        WaitFor(cluster, "run.log", Training, "the run did not start training");

        var cancel = cluster.Start(cluster.SeedBin, "cancel-1.log", ["cancel", "c1", "--runs-dir", runs, "--reason", "test says stop"]);
        Assert.True(ProcessCluster.Ended(cancel, TimeSpan.FromSeconds(90)), "cancel did not finish: " + cluster.Logs(_ => true, 30));
        cancel.WaitForExit();
        Assert.True(cancel.ExitCode == 0, "cancel failed: " + cluster.Logs(_ => true, 30));
        Assert.Contains("run c1 cancelled", cluster.Log("cancel-1.log"));
        Assert.True(ProcessCluster.Ended(run, TimeSpan.FromSeconds(60)), "the cancelled run's process did not end: " + cluster.Logs(_ => true, 30));
        run.WaitForExit();
        Assert.Equal(1, run.ExitCode);
        Assert.Contains("[result] run c1 cancelled: test says stop", cluster.Log("run.log"));
        Assert.Contains("cancelled: its run c1 was cancelled", File.ReadAllText(Path.Combine(runs, "c1-baseline", "events.log")));

        // nobody serves it now: cancel reads its journal, and it stays cancelled
        var again = cluster.Start(cluster.SeedBin, "cancel-2.log", ["cancel", "c1", "--runs-dir", runs]);
        Assert.True(ProcessCluster.Ended(again, TimeSpan.FromSeconds(90)));
        again.WaitForExit();
        Assert.Equal(0, again.ExitCode);
        Assert.Contains("run c1 had already ended: cancelled", cluster.Log("cancel-2.log"));
        var resume = cluster.Start(cluster.SeedBin, "run-2.log", ["run", spec, "--runs-dir", runs, "--run-id", "c1"]);
        Assert.True(ProcessCluster.Ended(resume, TimeSpan.FromSeconds(90)), "running a cancelled run again did not end: " + cluster.Logs(_ => true, 30));
        resume.WaitForExit();
        Assert.Equal(1, resume.ExitCode);
        Assert.Contains("[result] run c1 had already ended before this command, cancelled: test says stop", cluster.Log("run-2.log"));
        Assert.Contains("give another --run-id or none", cluster.Log("run-2.log"));
        Assert.False(File.Exists(Path.Combine(runs, "c1", "result.json")));
    }
}
