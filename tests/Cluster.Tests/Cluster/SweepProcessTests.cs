using System.Globalization;
using Distill.Engine.Sweeps;

namespace Cluster.Tests.Cluster;

/// <summary>
/// An embedded sweep (`Cluster.Seed sweep`) in its own process: a KD grid with ASHA, killed with
/// kill -9 in the middle and started again with the same --sweep-id. It resumes: no trial lost or
/// run twice, trials that had ended keep their result, and the scheduler's decisions are those a
/// fresh scheduler makes on the reports in the order they were journalled.
/// </summary>
[Collection(ProcessLanes.A)]
public sealed class SweepProcessTests
{
    /// <summary>The trials' base spec, base.yaml: KD of 60 steps of 64 from a seeded random LeNet-5 teacher, evaluated every 20.</summary>
    private static void WriteBase(ProcessCluster cluster)
    {
        var teacher = cluster.SaveTeacher(71);
        File.WriteAllText(Path.Combine(cluster.Work, "base.yaml"), $$"""
            name: kdsmall
            method: kd
            seed: 1
            data: {name: mnist, image_size: 32}
            teacher: {arch: lenet5, checkpoint: {{teacher}}}
            student:
              arch: lenet5-half
              train: {steps: 60, batch_size: 64, optimizer: adam, lr: 0.001, eval_every: 20}
            kd: {temperature: 4, alpha: 0.1}
            """);
    }

    /// <summary>Rows of a sweep's trials.csv without its header (none before it is written).</summary>
    private static string[] TrialRows(string dir) =>
        File.Exists(Path.Combine(dir, "trials.csv")) ? File.ReadAllLines(Path.Combine(dir, "trials.csv")).Skip(1).ToArray() : [];

    /// <summary>
    /// The sweep `yaml` run embedded (`Cluster.Seed sweep`, id `id`) in its own process, killed with
    /// kill -9 once `killWhen` holds of its folder (within `minutes`; else fails saying `notYet`),
    /// `afterKill` looking at what it left, then started again with the same id and run to its end.
    /// Returns the sweep's folder.
    /// </summary>
    private static string KilledAndResumed(ProcessCluster cluster, string yaml, string id, int minutes, Func<string, bool> killWhen, string notYet,
        Action<string>? afterKill = null)
    {
        var sweepFile = Path.Combine(cluster.Work, "sweep.yaml");
        File.WriteAllText(sweepFile, yaml);
        var sweeps = Path.Combine(cluster.Work, "sweeps");
        var dir = Path.Combine(sweeps, id);
        string[] args = ["sweep", sweepFile, "--sweeps-dir", sweeps, "--sweep-id", id];
        var first = cluster.Start(cluster.SeedBin, "sweep-1.log", args);
        var deadline = DateTime.UtcNow.AddMinutes(minutes);
        while (!killWhen(dir))
        {
            Assert.True(DateTime.UtcNow < deadline && !first.HasExited, notYet + ": " + cluster.Logs(_ => true, 30));
            Thread.Sleep(200);
        }
        first.Kill();
        first.WaitForExit();
        afterKill?.Invoke(dir);
        var again = cluster.Start(cluster.SeedBin, "sweep-2.log", args);
        Assert.True(ProcessCluster.Ended(again, TimeSpan.FromMinutes(4)), "the resumed sweep did not finish: " + cluster.Logs(_ => true, 40));
        again.WaitForExit();
        Assert.True(again.ExitCode == 0, "the resumed sweep failed: " + cluster.Logs(_ => true, 40));
        return dir;
    }

    [Fact]
    public void Should_resume_a_sweep_killed_mid_way_with_the_same_scheduler_and_its_pending_trials()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("sweep");
        WriteBase(cluster);
        Dictionary<string, string> before = [];
        Dictionary<string, int> metricsBefore = [];
        // kill once a trial has ended and the next one runs
        var dir = KilledAndResumed(cluster, """
            name: kdsw
            base: base.yaml
            space:
              kd.temperature: {grid: [1, 4]}
              kd.alpha: {grid: [0.1, 0.9]}
              student.train.lr: {loguniform: [0.0003, 0.003]}
            scheduler: {kind: asha, grace_period: 20, reduction_factor: 2, mode: stop}
            limits: {max_concurrent: 1}
            """, "s1", 3,
            d => TrialRows(d).Any(r => r.Contains(",stopped,") || r.Contains(",completed,")) && TrialRows(d).Any(r => r.Contains(",running,")),
            "the sweep did not get going", d =>
            {
                before = TrialRows(d).Where(r => r.Contains(",stopped,") || r.Contains(",completed,")).ToDictionary(r => r.Split(',')[0]);
                metricsBefore = before.Keys.ToDictionary(t => t, t => File.ReadAllLines(Path.Combine(d, "runs", $"s1-{t}", "metrics.csv")).Length);
            });
        string[] Rows() => TrialRows(dir);

        var rows = Rows().Select(r => r.Split(',')).ToArray();
        Assert.Equal(["t0000", "t0001", "t0002", "t0003"], rows.Select(r => r[0]));
        // every trial ran once: one run each, none started again under another attempt
        Assert.Equal(["s1-t0000", "s1-t0001", "s1-t0002", "s1-t0003"], Directory.GetDirectories(Path.Combine(dir, "runs")).Select(Path.GetFileName).Order());
        Assert.All(rows, r => Assert.Equal("1", r[^2]));
        Assert.All(rows, r => Assert.Contains(r[5], new[] { "stopped", "completed" }));
        // what had ended stays as it was, and its run trained no further
        foreach (var (t, row) in before)
        {
            Assert.Equal(row, File.ReadAllLines(Path.Combine(dir, "trials.csv")).First(l => l.StartsWith(t + ",")));
            Assert.Equal(metricsBefore[t], File.ReadAllLines(Path.Combine(dir, "runs", $"s1-{t}", "metrics.csv")).Length);
        }

        // the same decisions from a fresh scheduler on the journalled reports, in their order
        var spec = SweepParser.Load(Path.Combine(cluster.Work, "sweep.yaml"));
        var scheduler = Scheduler.For(spec);
        var stoppedAt = new Dictionary<string, string>();
        foreach (var line in File.ReadAllLines(Path.Combine(dir, "reports.csv")).Skip(1))
        {
            var c = line.Split(',');
            var config = new TrialConfig(spec.Space.Select((d, i) => new KeyValuePair<string, string>(d.Path, rows.First(r => r[0] == c[0])[2 + i])).ToArray());
            var d = scheduler.OnReport(new TrialReport(c[0], long.Parse(c[1], CultureInfo.InvariantCulture), spec.Score(double.Parse(c[2], CultureInfo.InvariantCulture)), config));
            if (d.Verdict == Verdict.Stop) stoppedAt.TryAdd(c[0], d.Reason);
        }
        foreach (var r in rows)
            Assert.True((r[5] == "stopped") == stoppedAt.ContainsKey(r[0]), $"trial {r[0]} is {r[5]}, but the replayed scheduler {(stoppedAt.ContainsKey(r[0]) ? "stopped" : "kept")} it");
        Assert.Contains(rows, r => r[5] == "completed");
        Assert.Contains(rows, r => r[5] == "stopped");
        Assert.Contains("\"state\": \"completed\"", File.ReadAllText(Path.Combine(dir, "best.json")));
    }

    /// <summary>
    /// ASHA with promotions, embedded: 4 trials of 60 steps, rungs at 20 and 40 (rf 2). Every trial
    /// pauses at step 20, and any trial in a rung's current top half not yet promoted goes on from its
    /// own checkpoint (Li et al.'s Algorithm 2), so a trial that tops a rung after others went on goes
    /// on too: here one trial never tops rung 0, one is beaten at rung 1, and two run to their ends.
    /// Killed with kill -9 while trials wait at a rung, started again with the same id. The sweep
    /// spends 20 + 40 + 60 + 60 = 180 student steps where every trial to its end would take 240, and
    /// each promoted run's curve goes on from where it paused (no step trained twice).
    /// </summary>
    [Fact]
    public void Asha_with_promotions_pauses_trials_at_rungs_and_sends_the_best_on_from_their_checkpoints_across_a_kill()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("sweeppromote");
        WriteBase(cluster);
        // kill once two trials wait at rung 0 and a third runs
        var dir = KilledAndResumed(cluster, """
            name: kdpromote
            base: base.yaml
            space:
              student.train.lr: {grid: [0.00003, 0.0003, 0.001, 0.003]}
            scheduler: {kind: asha, grace_period: 20, reduction_factor: 2}
            limits: {max_concurrent: 1}
            """, "p1", 3,
            d => TrialRows(d).Count(r => r.Contains(",paused,")) >= 2 && TrialRows(d).Any(r => r.Contains(",running,")), "the sweep did not get going");
        string[] Rows() => TrialRows(dir);

        var rows = Rows().Select(r => r.Split(',')).ToDictionary(r => r[0]);
        Assert.Equal(["t0000", "t0001", "t0002", "t0003"], rows.Keys.Order());
        int Col(string name) => Array.IndexOf(File.ReadAllLines(Path.Combine(dir, "trials.csv"))[0].Split(','), name);
        var (state, step) = (Col("state"), Col("step"));
        // one run each, none started again
        Assert.Equal(["p1-t0000", "p1-t0001", "p1-t0002", "p1-t0003"], Directory.GetDirectories(Path.Combine(dir, "runs")).Select(Path.GetFileName).Order());
        // rung 0 saw all four: one never topped it, one stopped at 40 once beaten there, two ran to their ends
        Assert.Equal([(20L, "stopped"), (40L, "stopped"), (60L, "completed"), (60L, "completed")],
            rows.Values.Select(r => (long.Parse(r[step], CultureInfo.InvariantCulture), r[state])).Order());
        var acc = Col("test_accuracy");
        double A(string[] r) => double.Parse(r[acc], CultureInfo.InvariantCulture);
        foreach (var done in rows.Values.Where(r => r[state] == "completed"))
        {
            var events = File.ReadAllText(Path.Combine(dir, "runs", done[1], "events.log"));
            Assert.Contains("paused at step 20", events);
            Assert.Contains("paused at step 40", events);
            Assert.Contains("sent on: goes on to step 40", events);
            Assert.Contains("sent on: goes on to its end", events);
            // the promoted run went on from its pause: its evaluations are 20, 40, 60, each once
            var metrics = File.ReadAllLines(Path.Combine(dir, "runs", done[1], "metrics.csv"));
            var header = metrics[0].Split(',');
            var (stepCol, accCol) = (Array.IndexOf(header, "step"), Array.IndexOf(header, "test_accuracy"));
            var evals = metrics.Skip(1).Select(l => l.Split(',')).Where(c => c[accCol].Length > 0).Select(c => long.Parse(c[stepCol], CultureInfo.InvariantCulture)).ToArray();
            Assert.Equal([20L, 40L, 60L], evals);
            Assert.True(A(done) > 0);
        }
        Assert.Contains("\"state\": \"completed\"", File.ReadAllText(Path.Combine(dir, "best.json")));
    }

    /// <summary>
    /// PBT through the real pipeline: four KD trials pause every 20 steps; at step 20 the worst
    /// (lr 1e-5) goes on as a new run from the best trial's checkpoint with that trial's learning rate
    /// perturbed. The sweep is killed with kill -9 once that fork exists and resumed: the fork runs
    /// once, from step 20, and every trial completes.
    /// </summary>
    [Fact]
    public void Pbt_sends_the_worst_trial_on_from_the_best_ones_checkpoint_with_a_perturbed_learning_rate_across_a_kill()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("sweeppbt");
        WriteBase(cluster);
        static string[] RunsIn(string d) => Directory.Exists(Path.Combine(d, "runs")) ? Directory.GetDirectories(Path.Combine(d, "runs")).Select(x => Path.GetFileName(x)!).Order().ToArray() : [];
        var dir = KilledAndResumed(cluster, """
            name: kdpbt
            base: base.yaml
            space:
              student.train.lr: {grid: [0.00001, 0.001, 0.003, 0.005]}
            scheduler: {kind: pbt, interval: 20, quantile: 0.25, resample_probability: 0}
            limits: {max_concurrent: 4}
            """, "b1", 4, d => RunsIn(d).Contains("b1-t0000-g1"), "no trial went on from another's checkpoint");
        string[] Runs() => RunsIn(dir);

        var lines = File.ReadAllLines(Path.Combine(dir, "trials.csv"));
        int Col(string name) => Array.IndexOf(lines[0].Split(','), name);
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToDictionary(r => r[0]);
        Assert.Equal(["t0000", "t0001", "t0002", "t0003"], rows.Keys.Order());
        Assert.All(rows.Values, r => Assert.Equal(("completed", "60"), (r[Col("state")], r[Col("step")])));
        // each run once: no attempt again, the fork not submitted twice
        Assert.DoesNotContain(Runs(), r => r.Contains("-a2"));
        Assert.Contains("b1-t0000", Runs());
        // the worst trial now has a top trial's learning rate, perturbed (0.8x or 1.2x; again at 40 if it was the worst there too)
        var lr = double.Parse(rows["t0000"][Col("student.train.lr")], CultureInfo.InvariantCulture);
        Assert.InRange(lr, 0.001 * 0.8 * 0.8 * 0.999, 0.005 * 1.2 * 1.2 * 1.001);
        // the fork began at step 20: its evaluations are at 40 and 60 only, and it is far past where lr 1e-5 was at 20
        double[] Evals(string run, out long[] steps)
        {
            var m = File.ReadAllLines(Path.Combine(dir, "runs", run, "metrics.csv"));
            var h = m[0].Split(',');
            var (sc, ac) = (Array.IndexOf(h, "step"), Array.IndexOf(h, "test_accuracy"));
            var rowsWithAcc = m.Skip(1).Select(l => l.Split(',')).Where(c => c[ac].Length > 0).ToArray();
            steps = rowsWithAcc.Select(c => long.Parse(c[sc], CultureInfo.InvariantCulture)).ToArray();
            return rowsWithAcc.Select(c => double.Parse(c[ac], CultureInfo.InvariantCulture)).ToArray();
        }
        var slow = Evals("b1-t0000", out var slowSteps);
        Assert.Equal([20L], slowSteps);
        var forked = Evals("b1-t0000-g1", out var forkSteps);
        Assert.Equal(40L, forkSteps[0]);
        Assert.DoesNotContain(20L, forkSteps);
        Assert.True(forked[0] > slow[0] + 10, $"the fork at step 40 ({forked[0]:F2}%) is not past the lr 1e-5 trial at 20 ({slow[0]:F2}%): it did not begin from a better checkpoint");
        Assert.Contains("begins at step 20 from the checkpoints of trial t000", File.ReadAllText(Path.Combine(dir, "runs", "b1-t0000-g1", "events.log")));
    }
}
