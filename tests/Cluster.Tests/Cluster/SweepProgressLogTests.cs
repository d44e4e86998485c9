using Cluster.Contracts.Sweeps;
using Cluster.Node.Hosting;

namespace Cluster.Tests.Cluster;

/// <summary>A followed sweep written as a log: a line per trial event, the table first, at most once a minute and at the end.</summary>
public sealed class SweepProgressLogTests
{
    private static readonly DateTime T0 = new(2026, 12, 7, 9, 0, 0, DateTimeKind.Utc);

    private static TrialSummary Trial(string id, TrialState state, long step, double? metric, int rung = 0, string? reason = null) =>
        new(id, "s-" + id, ["0.001", "4"], state, step, metric, metric, rung, 1, reason);

    private static SweepSummary Sweep(SweepState state, params TrialSummary[] trials) =>
        new("s", "s", state, "val_accuracy", "max", ["student.train.lr", "kd.temperature"], trials, trials.Sum(t => t.Step), null);

    [Fact]
    public void Should_write_a_line_per_trial_event_and_the_table_at_most_once_a_minute_and_at_the_end()
    {
        var log = new SweepProgressLog();
        var first = log.Next(Sweep(SweepState.Running, Trial("t0", TrialState.Running, 0, null)), T0);
        Assert.StartsWith("[sweep s] running: 1 trial, 1 running", first);
        Assert.Contains("t0     0.001             4               running", first);

        // a metric that moves within a rung is no event
        Assert.Equal("", log.Next(Sweep(SweepState.Running, Trial("t0", TrialState.Running, 20, 91.5)), T0.AddSeconds(2)));

        // a pause at a rung: one line with the scheduler's whole reason, no table within the minute
        var reason = "paused at step 47 (pause 1), waiting for the scheduler: 78.26 is in the top 1 of 4 at rung 0 so far";
        var paused = log.Next(Sweep(SweepState.Running, Trial("t0", TrialState.Paused, 47, 78.26, 0, reason), Trial("t1", TrialState.Running, 0, null)), T0.AddSeconds(10));
        Assert.Equal(
            $"[sweep s] t0 (student.train.lr=0.001, kd.temperature=4) paused at step 47, val_accuracy 78.26, rung 0: {reason}\n" +
            "[sweep s] t1 (student.train.lr=0.001, kd.temperature=4) running at step 0, rung 0\n",
            paused.Replace("\r\n", "\n"));

        // a minute after the last table, a change brings the table back
        var later = log.Next(Sweep(SweepState.Running, Trial("t0", TrialState.Running, 47, 78.26, 1, "promoted"), Trial("t1", TrialState.Running, 30, 60.0)), T0.AddSeconds(61));
        Assert.StartsWith("[sweep s] t0 (student.train.lr=0.001, kd.temperature=4) running at step 47, val_accuracy 78.26, rung 1: promoted\n", later.Replace("\r\n", "\n"));
        Assert.Contains("[sweep s] running: 2 trials", later);
        Assert.Equal("", log.Next(Sweep(SweepState.Running, Trial("t0", TrialState.Running, 60, 80.0, 1, "promoted"), Trial("t1", TrialState.Running, 40, 61.0)), T0.AddSeconds(200)));

        // the end: the trials' last events, then the table
        var end = log.Next(Sweep(SweepState.Completed, Trial("t0", TrialState.Completed, 94, 97.5, 1, "promoted"), Trial("t1", TrialState.Stopped, 47, 61.0, 0, "rung 0: not in the top")), T0.AddSeconds(201));
        Assert.Contains("t0 (student.train.lr=0.001, kd.temperature=4) completed at step 94, val_accuracy 97.5, rung 1: promoted", end);
        Assert.Contains("t1 (student.train.lr=0.001, kd.temperature=4) stopped at step 47, val_accuracy 61, rung 0: rung 0: not in the top", end);
        Assert.Contains("[sweep s] completed: 2 trials, 0 running", end);
    }
}
