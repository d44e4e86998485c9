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

    private static int BigEndian(byte[] b, int at) => b[at] << 24 | b[at + 1] << 16 | b[at + 2] << 8 | b[at + 3];
}
