using System.Diagnostics;
using System.Text.Json;

namespace Cluster.Tests.Cluster;

/// <summary>
/// A sweep on a seed and two GPU nodes, each its own process, with a PostgreSQL journal: kill -9 of
/// the GPU node that trains a trial (the trial goes on on the other node from its checkpoint), then
/// kill -9 of every process (the seed and the surviving GPU node) and new ones on the same ports (the
/// sweep coordinator recovers, and trials go on from their last checkpoints). Every trial completes
/// once: none lost, none run again under a second attempt, none started over from step 0.
/// </summary>
[Collection(ProcessLanes.A)]
public sealed class SweepFailoverProcessTests
{
    private static JsonElement? Status(string runDir)
    {
        try { return JsonDocument.Parse(File.ReadAllText(Path.Combine(runDir, "status.json"))).RootElement.Clone(); }
        catch (Exception e) when (e is IOException or JsonException) { return null; }
    }

    [Fact]
    public void Should_complete_every_trial_once_through_the_loss_of_a_gpu_node_and_then_of_every_process()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("sweepfail");
        var teacher = cluster.SaveTeacher(81);
        File.WriteAllText(Path.Combine(cluster.Work, "base.yaml"), $$"""
            name: kdfail
            method: kd
            seed: 2
            data: {name: mnist, image_size: 32}
            teacher: {arch: lenet5, checkpoint: {{teacher}}}
            student:
              arch: lenet5-half
              train: {steps: 150, batch_size: 64, optimizer: adam, lr: 0.001, eval_every: 25}
            kd: {temperature: 4, alpha: 0.1}
            cluster: {checkpoint_every: 10}
            """);
        var sweepFile = Path.Combine(cluster.Work, "sweep.yaml");
        File.WriteAllText(sweepFile, """
            name: kdfail
            base: base.yaml
            space:
              kd.temperature: {grid: [1, 4]}
              kd.alpha: {grid: [0.1, 0.9]}
            scheduler: {kind: fifo}
            limits: {max_concurrent: 2, max_failures: 0}
            """);
        var port = TestPorts.Block(3);
        var seeds = $"127.0.0.1:{port}";
        string[] seedArgs = ["serve", "--port", port.ToString(), "--http-port", cluster.HttpPort.ToString(), .. cluster.Common];
        var seed = cluster.Start(cluster.SeedBin, "seed.log", seedArgs);
        Thread.Sleep(3000);
        var gpus = new[] { 1, 2 }.Select(i => (Port: port + i, Process: cluster.Start(cluster.GpuBin, $"gpu{i}.log",
            ["join", "--seeds", seeds, "--port", (port + i).ToString(), .. cluster.Common]))).ToArray();
        cluster.WaitUntilUp(DateTime.UtcNow.AddMinutes(2), "gpu1.log", "gpu2.log");

        var submit = cluster.Start(cluster.SeedBin, "submit.log", ["submit", sweepFile, "--server", cluster.Server, "--sweep-id", "f1"]);
        Assert.True(ProcessCluster.Ended(submit, TimeSpan.FromSeconds(90)) && submit.ExitCode == 0, "submit: " + cluster.Logs(_ => true, 30));
        var runs = Path.Combine(cluster.Work, "runs");

        // a trial past step 40: kill -9 the node that trains it
        var deadline = DateTime.UtcNow.AddMinutes(3);
        string? victimRun = null;
        string? victimNode = null;
        long killedAt = 0;
        while (victimRun is null)
        {
            Assert.True(DateTime.UtcNow < deadline, "no trial got going: " + cluster.Logs(_ => true, 30));
            foreach (var dir in Directory.Exists(runs) ? Directory.GetDirectories(runs, "f1-*") : [])
                if (Status(dir) is { } s && s.GetProperty("state").GetString() == "training" && s.GetProperty("step").GetInt64() >= 40
                    && s.GetProperty("student_node").GetString() is { } node)
                    (victimRun, victimNode, killedAt) = (Path.GetFileName(dir), node, s.GetProperty("step").GetInt64());
            Thread.Sleep(200);
        }
        var victim = gpus.Single(g => victimNode!.EndsWith($":{g.Port}"));
        victim.Process.Kill();
        victim.Process.WaitForExit();

        // it goes on on the survivor, past where it was
        deadline = DateTime.UtcNow.AddMinutes(3);
        while (!(Status(Path.Combine(runs, victimRun)) is { } s && s.GetProperty("student_node").GetString() != victimNode
                 && (s.GetProperty("step").GetInt64() > killedAt || s.GetProperty("state").GetString() == "completed")))
        {
            Assert.True(DateTime.UtcNow < deadline, $"{victimRun} did not go on after its node was killed at step {killedAt}: " + cluster.Logs(_ => true, 30));
            Thread.Sleep(300);
        }

        // kill -9 every process in the middle of the sweep, and start new ones on the same ports
        var survivor = gpus.Single(g => g.Process != victim.Process);
        seed.Kill();
        survivor.Process.Kill();
        seed.WaitForExit();
        survivor.Process.WaitForExit();
        cluster.Start(cluster.SeedBin, "seed-2.log", seedArgs);
        Thread.Sleep(3000);
        foreach (var i in new[] { 1, 2 })
            cluster.Start(cluster.GpuBin, $"gpu{i}-2.log", ["join", "--seeds", seeds, "--port", (port + i).ToString(), .. cluster.Common]);

        var best = Path.Combine(cluster.Work, "sweeps", "f1", "best.json");
        deadline = DateTime.UtcNow.AddMinutes(6);
        while (!(File.Exists(best) && File.ReadAllText(best).Contains("\"state\": \"completed\"")))
        {
            Assert.True(DateTime.UtcNow < deadline, "the sweep did not complete after the seed came back: " + cluster.Logs(_ => true, 40));
            Thread.Sleep(500);
        }
        var rows = File.ReadAllLines(Path.Combine(cluster.Work, "sweeps", "f1", "trials.csv")).Skip(1).Select(l => l.Split(',')).ToArray();
        Assert.Equal(["t0000", "t0001", "t0002", "t0003"], rows.Select(r => r[0]));
        Assert.All(rows, r => Assert.Equal(("completed", "150", "1"), (r[4], r[5], r[^2])));
        Assert.Equal(["f1-t0000", "f1-t0001", "f1-t0002", "f1-t0003"], Directory.GetDirectories(runs, "f1-*").Select(Path.GetFileName).Order());
        foreach (var r in rows)
        {
            Assert.Equal(150, JsonDocument.Parse(File.ReadAllText(Path.Combine(runs, r[1], "result.json"))).RootElement.GetProperty("steps").GetInt64());
            // never started over: after a kill a run goes back at most to its last checkpoint (every 10 steps)
            var metrics = File.ReadAllLines(Path.Combine(runs, r[1], "metrics.csv"));
            var header = metrics[0].Split(',');
            var (phase, step, acc) = (Array.IndexOf(header, "phase"), Array.IndexOf(header, "step"), Array.IndexOf(header, "test_accuracy"));
            var steps = metrics.Skip(1).Select(l => l.Split(',')).Where(c => c[phase] == "student-0").Select(c => long.Parse(c[step])).ToArray();
            for (var i = 1; i < steps.Length; i++)
                Assert.True(steps[i] > steps[..i].Max() - 10, $"{r[1]} went back from step {steps[..i].Max()} to {steps[i]}: {string.Join(' ', steps)}");
            var evals = metrics.Skip(1).Select(l => l.Split(',')).Where(c => c[phase] == "student-0" && c[acc].Length > 0).Select(c => long.Parse(c[step])).ToHashSet();
            // (a row the killed seed had not written yet may be missing)
            Assert.Subset(new HashSet<long> { 25, 50, 75, 100, 125, 150 }, evals);
            Assert.Contains(150L, evals);
        }

        // a sweep's id given to cancel as a run's is named so
        var cancel = cluster.Start(cluster.SeedBin, "cancel.log", ["cancel", "f1", "--server", cluster.Server]);
        Assert.True(ProcessCluster.Ended(cancel, TimeSpan.FromSeconds(30)), "cancel did not end: " + cluster.Log("cancel.log"));
        cancel.WaitForExit();
        Assert.True(cancel.ExitCode == 2, $"cancel of a sweep's id as a run's: exit {cancel.ExitCode}: {cluster.Log("cancel.log")}");
        Assert.Contains("f1 is a sweep's id; cancel a sweep with --sweep", cluster.Log("cancel.log"));
    }
}
