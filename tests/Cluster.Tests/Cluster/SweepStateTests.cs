using Cluster.Contracts.Events;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Actors;

namespace Cluster.Tests.Cluster;

/// <summary>The sweep coordinator's state and decisions without an actor: events in, state and events out; and the files it writes.</summary>
public sealed class SweepStateTests
{
    private static readonly string KdBase = Path.Combine(Repo.Root(), "specs", "kd-mnist.yaml");

    private static readonly string Yaml = $"""
        name: s
        base: {KdBase}
        space:
          kd.temperature: {"{grid: [1, 4]}"}
          kd.alpha: {"{grid: [0.1, 0.9]}"}
        scheduler: {"{kind: asha, grace_period: 100, reduction_factor: 2, mode: stop}"}
        limits: {"{max_concurrent: 2, max_failures: 1}"}
        """;

    private static SweepsState Apply(SweepsState s, IEnumerable<global::Cluster.Contracts.IPersistedEvent> events) => events.Aggregate(s, (x, e) => x.Apply(e));

    [Fact]
    public void Should_count_the_headers_steps_from_the_same_moment_as_the_rows()
    {
        var now = new DateTime(2026, 12, 4, 12, 0, 0, DateTimeKind.Utc);
        var s = SweepsState.Empty.Apply(new SweepSubmitted("s", Yaml, "s.yaml", now, true));
        var rt = SweepRuntime.Rebuild(s.Sweeps["s"]);
        s = Apply(s, SweepDecisions.Fill(s.Sweeps["s"], rt, now));
        var r = s.Sweeps["s"];
        s = s.Apply(SweepDecisions.Report(r, rt, r.Trial("t0000")!, 100, ["test_accuracy"], [80])!);
        // the journal has t0000 at step 100 and t0001 at 0; their runs have reported 130 and 40 since (one run's report is behind the journal)
        var summary = SweepDecisions.Summary(s.Sweeps["s"], rt, new Dictionary<string, long> { ["s-t0000"] = 130, ["s-t0001"] = 40, ["s-other"] = 9 });
        Assert.Equal([130L, 40L], summary.Trials.Select(t => t.Step));
        // the score beside the step it was measured at, not the step the run is at now
        Assert.Equal([100L, null], summary.Trials.Select(t => t.MetricStep));
        var table = global::Cluster.Node.Hosting.SweepClient.Table(summary);
        Assert.True(System.Text.RegularExpressions.Regex.IsMatch(table, @"t0000 .* running +130 +80 +100 "), table);
        Assert.Equal(170, summary.StudentSteps);
        Assert.Equal(100, s.Sweeps["s"].StudentSteps);
        var behind = SweepDecisions.Summary(s.Sweeps["s"], rt, new Dictionary<string, long> { ["s-t0000"] = 60 });
        Assert.Equal([100L, 0L], behind.Trials.Select(t => t.Step));
        Assert.Equal(100, behind.StudentSteps);
    }

    /// <summary>
    /// A trial whose run waits for a slot shows as queued, not running; once max_student_steps is
    /// spent it never starts (cancelled with the reason), and neither does a pending repeat: the
    /// budget is not overshot by trials that had not begun.
    /// </summary>
    [Fact]
    public void Should_show_a_trial_waiting_for_a_slot_as_queued_and_start_no_trial_once_the_step_budget_is_spent()
    {
        var now = new DateTime(2026, 12, 4, 12, 0, 0, DateTimeKind.Utc);
        string Yaml(string name, int concurrent) => $"""
            name: {name}
            base: {KdBase}
            space:
              kd.temperature: {"{grid: [1, 4, 8]}"}
            repeats: 2
            limits: {"{"}max_concurrent: {concurrent}, max_student_steps: 150{"}"}
            """;
        var s = SweepsState.Empty.Apply(new SweepSubmitted("q", Yaml("q", 2), "q.yaml", now, true));
        var rt = SweepRuntime.Rebuild(s.Sweeps["q"]);
        s = Apply(s, SweepDecisions.Fill(s.Sweeps["q"], rt, now));
        Assert.Equal([TrialState.Running, TrialState.Running], s.Sweeps["q"].Trials.Select(t => t.State));

        // the cluster has one slot: the second repeat's run waits for it
        var queued = new HashSet<string> { "q-t0000r1" };
        var summary = SweepDecisions.Summary(s.Sweeps["q"], rt, new Dictionary<string, long>(), queued);
        Assert.Equal([TrialState.Running, TrialState.Queued], summary.Trials.Select(t => t.State));
        var table = global::Cluster.Node.Hosting.SweepClient.Table(summary);
        Assert.Contains("2 trials, 1 running, 1 waiting for a slot,", table);
        Assert.Matches(@"t0000r1 .* queued ", table);

        // the first repeat spends the budget; the one still waiting never starts, the running one finishes
        var r = s.Sweeps["q"];
        s = s.Apply(SweepDecisions.Report(r, rt, r.Trial("t0000r0")!, 200, ["test_accuracy"], [90])!);
        r = s.Sweeps["q"];
        Assert.Null(SweepDecisions.NotStarted(r, rt, r.Trial("t0000r0")!, RunState.Training, now));
        Assert.Null(SweepDecisions.NotStarted(r, rt, r.Trial("t0000r1")!, RunState.Training, now));   // admitted meanwhile: it runs
        var notStarted = SweepDecisions.NotStarted(r, rt, r.Trial("t0000r1")!, RunState.Queued, now)!;
        Assert.Equal((TrialState.Cancelled, "not started: max_student_steps 150 reached while its run waited for a slot"), (notStarted.State, notStarted.Reason));
        s = s.Apply(notStarted);
        Assert.Empty(SweepDecisions.Fill(s.Sweeps["q"], rt, now));
        r = s.Sweeps["q"];
        s = s.Apply(SweepDecisions.RunEnded(r, rt, r.Trial("t0000r0")!, "q-t0000r0", RunState.Completed, 200, 90, null)!);
        Assert.Equal("max_student_steps 150 reached", SweepDecisions.Finished(s.Sweeps["q"], rt, now)!.Reason);

        // one place: the second repeat is pending, and once the budget is spent it ends unstarted
        var p = SweepsState.Empty.Apply(new SweepSubmitted("p", Yaml("p", 1), "p.yaml", now, true));
        var prt = SweepRuntime.Rebuild(p.Sweeps["p"]);
        p = Apply(p, SweepDecisions.Fill(p.Sweeps["p"], prt, now));
        Assert.Equal([TrialState.Running, TrialState.Pending], p.Sweeps["p"].Trials.Select(t => t.State));
        var pr = p.Sweeps["p"];
        p = p.Apply(SweepDecisions.Report(pr, prt, pr.Trial("t0000r0")!, 200, ["test_accuracy"], [90])!);
        var fill = SweepDecisions.Fill(p.Sweeps["p"], prt, now);
        var ended = Assert.IsType<TrialEnded>(Assert.Single(fill));
        Assert.Equal(("t0000r1", TrialState.Cancelled, "not started: max_student_steps 150 reached"), (ended.TrialId, ended.State, ended.Reason));
    }

    [Fact]
    public void Should_fill_to_max_concurrent_stop_at_rungs_retry_failures_and_end_when_the_grid_is_done()
    {
        var now = new DateTime(2026, 12, 4, 12, 0, 0, DateTimeKind.Utc);
        var s = SweepsState.Empty.Apply(new SweepSubmitted("s", Yaml, "s.yaml", now, true));
        var rt = SweepRuntime.Rebuild(s.Sweeps["s"]);

        // two configurations made and launched at once, the other two wait for places
        var fill = SweepDecisions.Fill(s.Sweeps["s"], rt, now);
        Assert.Equal(["TrialCreated t0000", "TrialLaunched s-t0000", "TrialCreated t0001", "TrialLaunched s-t0001"],
            fill.Select(e => e switch { TrialCreated c => $"TrialCreated {c.TrialId}", TrialLaunched l => $"TrialLaunched {l.RunId}", _ => "?" }));
        s = Apply(s, fill);
        Assert.Empty(SweepDecisions.Fill(s.Sweeps["s"], rt, now));

        // rung 0 at step 100: the first to arrive goes on, the second (below the median of one) stops
        var r = s.Sweeps["s"];
        var first = SweepDecisions.Report(r, rt, r.Trial("t0000")!, 100, ["test_accuracy", "loss"], [80, 0.3])!;
        Assert.False(first.Stop);
        s = s.Apply(first);
        r = s.Sweeps["s"];
        Assert.Null(SweepDecisions.Report(r, rt, r.Trial("t0000")!, 100, ["test_accuracy"], [81]));   // the same step again
        Assert.Null(SweepDecisions.Report(r, rt, r.Trial("t0000")!, 120, ["loss"], [0.2]));          // no metric in the row
        var second = SweepDecisions.Report(r, rt, r.Trial("t0001")!, 100, ["test_accuracy"], [70])!;
        Assert.True(second.Stop);
        s = s.Apply(second);
        Assert.Equal(TrialState.Stopped, s.Sweeps["s"].Trial("t0001")!.State);

        // its cancelled run ends: it stays stopped, and the place goes to the next configuration
        r = s.Sweeps["s"];
        var ended = Assert.IsType<TrialEnded>(SweepDecisions.RunEnded(r, rt, r.Trial("t0001")!, "s-t0001", RunState.Cancelled, 100, 70, "cancelled"));
        s = s.Apply(ended);
        Assert.Equal(TrialState.Stopped, s.Sweeps["s"].Trial("t0001")!.State);
        fill = SweepDecisions.Fill(s.Sweeps["s"], rt, now);
        Assert.Equal(["t0002", "t0002"], fill.Select(e => e switch { TrialCreated c => c.TrialId, TrialLaunched l => l.TrialId, _ => "?" }));
        s = Apply(s, fill);

        // a failure is run again once (max_failures 1), then the trial fails with the reason
        r = s.Sweeps["s"];
        var again = Assert.IsType<TrialLaunched>(SweepDecisions.RunEnded(r, rt, r.Trial("t0002")!, "s-t0002", RunState.Failed, 5, null, "loss is NaN"));
        Assert.Equal(("s-t0002-a2", 2), (again.RunId, again.Attempt));
        s = s.Apply(again);
        r = s.Sweeps["s"];
        Assert.Null(SweepDecisions.RunEnded(r, rt, r.Trial("t0002")!, "s-t0002", RunState.Failed, 5, null, "late news of the first attempt"));
        var failed = Assert.IsType<TrialEnded>(SweepDecisions.RunEnded(r, rt, r.Trial("t0002")!, "s-t0002-a2", RunState.Failed, 5, null, "loss is NaN"));
        Assert.Contains("failed 2 time(s), max_failures 1: loss is NaN", failed.Reason);
        s = s.Apply(failed);

        // the rest completes; with the grid done and nothing running the sweep ends
        s = Apply(s, SweepDecisions.Fill(s.Sweeps["s"], rt, now));
        r = s.Sweeps["s"];
        Assert.Null(SweepDecisions.Finished(r, rt, now));
        s = s.Apply(SweepDecisions.RunEnded(r, rt, r.Trial("t0000")!, "s-t0000", RunState.Completed, 1175, 95, null)!);
        r = s.Sweeps["s"];
        s = s.Apply(SweepDecisions.RunEnded(r, rt, r.Trial("t0003")!, "s-t0003", RunState.Completed, 1175, 93, null)!);
        var end = SweepDecisions.Finished(s.Sweeps["s"], rt, now);
        Assert.Equal(SweepState.Completed, end!.State);
        s = s.Apply(end);
        var best = SweepDecisions.Best(s.Sweeps["s"], rt)!.Value;
        Assert.Equal(("t0000", 95.0), (best.Trials.Single().TrialId, best.Mean));

        // a runtime rebuilt from the record (a restarted coordinator) holds the same rung results
        var rebuilt = SweepRuntime.Rebuild(s.Sweeps["s"]);
        var asha = (Distill.Engine.Sweeps.AshaScheduler)rebuilt.Scheduler;
        Assert.Equal(new Dictionary<string, double> { ["t0000"] = 80, ["t0001"] = 70 }, asha.At(100));

        // the files: the table, the reports in order, the best, the plots
        var dir = Path.Combine(Path.GetTempPath(), $"cd-sweepfiles-{Guid.NewGuid():N}");
        try
        {
            SweepFiles.Write(dir, s.Sweeps["s"], rebuilt, plots: true);
            var trials = File.ReadAllLines(Path.Combine(dir, "s", "trials.csv"));
            Assert.Equal("trial,run,kd.temperature,kd.alpha,state,step,test_accuracy,best,rungs,attempt,reason", trials[0]);
            Assert.StartsWith("t0001,s-t0001,1,0.9,stopped,100,70,70,1,1,rung 0 (step 100): 70 is below", trials[2]);
            Assert.StartsWith("t0002,s-t0002-a2,4,0.1,failed,5,,,0,2,", trials[3]);
            Assert.Equal(["trial,step,value", "t0000,100,80", "t0001,100,70"], File.ReadAllLines(Path.Combine(dir, "s", "reports.csv")));
            Assert.Contains("\"trials\": [\n      \"t0000\"", File.ReadAllText(Path.Combine(dir, "s", "best.json")).Replace("\r", ""));
            // the best configuration's values are JSON numbers, as the spec reads them
            using (var bestJson = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "s", "best.json"))))
            {
                var config = bestJson.RootElement.GetProperty("best").GetProperty("config");
                Assert.Equal(System.Text.Json.JsonValueKind.Number, config.GetProperty("kd.temperature").ValueKind);
                Assert.Equal(System.Text.Json.JsonValueKind.Number, config.GetProperty("kd.alpha").ValueKind);
            }
            Assert.Equal(["4", "0.5", "true", "\"sgd\""], new[] { "4", "0.5", "true", "sgd" }.Select(v => Distill.Engine.Sweeps.ResultsTable.JsonScalar(v)!.ToJsonString()));
            Assert.Equal(0.001, Distill.Engine.Sweeps.ResultsTable.JsonScalar("1e-3")!.GetValue<double>());
            foreach (var png in new[] { "metric.png", "test_accuracy_vs_kd_temperature.png", "test_accuracy_vs_kd_alpha.png" })
            {
                var bytes = File.ReadAllBytes(Path.Combine(dir, "s", png));
                Assert.Equal([0x89, 0x50, 0x4E, 0x47], bytes[..4]);
                // IHDR: width and height, big-endian
                Assert.Equal((SweepPlots.Width, SweepPlots.Height), (BigEndian(bytes, 16), BigEndian(bytes, 20)));
            }
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Pbt_waits_for_the_whole_population_at_a_step_decides_it_at_once_and_forks_the_bottom_from_the_top_trials_pin()
    {
        var now = new DateTime(2026, 12, 4, 12, 0, 0, DateTimeKind.Utc);
        var yaml = $"""
            name: p
            base: {KdBase}
            space:
              kd.alpha: {"{grid: [0.1, 0.3, 0.5, 0.7]}"}
            scheduler: {"{kind: pbt, interval: 100, quantile: 0.25, resample_probability: 0}"}
            limits: {"{max_concurrent: 2, max_failures: 1}"}
            """;
        var s = SweepsState.Empty.Apply(new SweepSubmitted("p", yaml, "p.yaml", now, true));
        var rt = SweepRuntime.Rebuild(s.Sweeps["p"]);
        string Blob(char c) => new(c, 64);
        List<global::Cluster.Contracts.IPersistedEvent> Fill() => SweepDecisions.Fill(s.Sweeps["p"], rt, now);
        void Pause(string trial, double value, char blob)
        {
            var r = s.Sweeps["p"];
            var t = r.Trial(trial)!;
            var e = SweepDecisions.Paused(r, rt, t, t.RunId!, 100, value)!;
            s = s.Apply(e with { StudentBlob = Blob(blob), SourceBlob = Blob(char.ToUpperInvariant(blob)) });
        }

        // two at once, each to pause at step 100
        var first = Fill();
        Assert.Equal([100L, 100L], first.OfType<TrialLaunched>().Select(l => l.HoldAt!.Value));
        s = Apply(s, first);
        // one paused: nothing decided while the others are still to pause there (one running, two not made yet); a third starts
        Pause("t0000", 90, 'a');
        var second = Fill();
        Assert.Equal(["t0002"], second.OfType<TrialLaunched>().Select(l => l.TrialId));
        Assert.Empty(second.OfType<TrialPromoted>());
        s = Apply(s, second);
        Pause("t0001", 95, 'b');
        s = Apply(s, Fill());
        Pause("t0002", 80, 'c');
        Assert.DoesNotContain(Fill(), e => e is TrialPromoted or TrialExploited);   // t0003 runs towards 100
        Pause("t0003", 85, 'd');

        // all four at 100: decided at once; the bottom one (ceil(4 * 0.25) = 1) goes on from the top one's pin
        var decided = Fill();
        var exploit = Assert.Single(decided.OfType<TrialExploited>());
        Assert.Equal(("t0002", "t0001", 100L, "p-t0002-g1", 200L, Blob('b'), Blob('B')),
            (exploit.TrialId, exploit.From, exploit.Step, exploit.RunId, exploit.HoldAt, exploit.StudentBlob, exploit.SourceBlob));
        Assert.Contains(exploit.Values.Single(), new[] { "0.1", "0.5" });   // t0001's 0.3, moved to a neighbour
        Assert.Equal(["t0000", "t0001", "t0003"], decided.OfType<TrialPromoted>().Select(p => p.TrialId).Order());
        Assert.All(decided.OfType<TrialPromoted>(), p => Assert.Equal(200L, p.HoldAt));
        // a coordinator rebuilt from the record decides the same
        var again = SweepDecisions.Fill(s.Sweeps["p"], SweepRuntime.Rebuild(s.Sweeps["p"]), now);
        Assert.Equal(decided.Select(e => System.Text.Json.JsonSerializer.Serialize(e, e.GetType())), again.Select(e => System.Text.Json.JsonSerializer.Serialize(e, e.GetType())));

        s = Apply(s, decided);
        var forked = s.Sweeps["p"].Trial("t0002")!;
        Assert.Equal((TrialState.Running, "p-t0002-g1", 100L, 100L, 1), (forked.State, forked.RunId, forked.Step, forked.Trained, forked.Generation));
        Assert.Equal(new ForkPoint("trial t0001", 100, Blob('b'), Blob('B')), forked.Fork);
        Assert.Null(forked.Pin);   // its own pause's checkpoints are not what it trains now
        Assert.Equal(400, s.Sweeps["p"].StudentSteps);
        // the history keeps what trials.csv, with each trial's last configuration only, loses: exploits.csv
        var history = Assert.Single(s.Sweeps["p"].Exploits);
        Assert.Equal(("t0002", 100L, "t0001", "p-t0002-g1", "0.5", exploit.Values.Single()),
            (history.TrialId, history.Step, history.From, history.RunId, history.Before.Single(), history.After.Single()));
        var csv = SweepFiles.ExploitsCsv(s.Sweeps["p"], rt).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToArray();
        Assert.Equal("trial,step,from,run,kd.alpha before,kd.alpha after,reason", csv[0]);
        Assert.StartsWith($"t0002,100,t0001,p-t0002-g1,0.5,{exploit.Values.Single()},", csv[1]);
        Assert.Equal(2, csv.Length);

        // the fork reports at 150 and fails: it runs again from where it began (step 100, the same fork), its 50 steps spent
        s = s.Apply(new TrialReported("p", "t0002", 150, 60, false, "", 0));
        var r = s.Sweeps["p"];
        var retry = (TrialLaunched)SweepDecisions.RunEnded(r, rt, r.Trial("t0002")!, "p-t0002-g1", RunState.Failed, 150, null, "boom")!;
        Assert.Equal(("p-t0002-g1-a2", 2, 200L), (retry.RunId, retry.Attempt, retry.HoldAt!.Value));
        s = s.Apply(retry);
        var retried = s.Sweeps["p"].Trial("t0002")!;
        Assert.Equal((100L, 100L, 150L, 100L), (retried.Step, retried.Start, retried.Trained, retried.Reported));
        Assert.Equal(forked.Fork, retried.Fork);
    }

    private static int BigEndian(byte[] b, int at) => b[at] << 24 | b[at + 1] << 16 | b[at + 2] << 8 | b[at + 3];
}
