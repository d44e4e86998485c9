using Distill.Engine.Runs;

namespace Cluster.Tests;

/// <summary>The progress lines' rate and time left, computed by hand for the samples given.</summary>
public sealed class ProgressMeterTests
{
    [Fact]
    public void Should_give_the_rate_over_its_window_and_the_time_left_at_it()
    {
        var m = new ProgressMeter(1000, TimeSpan.FromSeconds(10));
        Assert.Null(m.Rate);
        Assert.Equal("step 0/1000 (0.0%)", m.Describe(0));
        m.Add(0, 0);
        m.Add(5, 50);                       // 10 steps/s
        Assert.Equal(10, m.Rate!.Value, 9);
        Assert.Equal(TimeSpan.FromSeconds(95), m.Eta(50));
        Assert.Equal("step 50/1000 (5.0%), 10.0 steps/s, ETA 1:35", m.Describe(50));
        // the window keeps the last 10 s (and two samples): 250 -> 350 from t=15 to t=20 is 20 steps/s
        m.Add(15, 250);
        m.Add(20, 350);
        Assert.Equal(20, m.Rate!.Value, 9);
        Assert.Equal(TimeSpan.FromSeconds(32.5), m.Eta(350));
    }

    [Fact]
    public void Should_start_again_after_a_step_back_and_say_hours()
    {
        var m = new ProgressMeter(100_000);
        m.Add(0, 500);
        m.Add(10, 600);
        m.Add(11, 400);                     // rolled back
        Assert.Null(m.Rate);
        m.Add(21, 410);                     // 1 step/s
        Assert.Equal(1, m.Rate!.Value, 9);
        Assert.Equal("27:39:50", ProgressMeter.Clock(m.Eta(410)!.Value));
        Assert.Equal("step 410/100000 (0.4%), 1.00 steps/s, ETA 27:39:50", m.Describe(410));
    }

    [Fact]
    public void Should_list_the_losses_of_a_step_in_order()
    {
        var values = new Dictionary<string, double> { ["test_accuracy"] = 97.5, ["loss_kd"] = 0.123456, ["lr"] = 0.001, ["kl_kd"] = 0.5, ["loss"] = 2 };
        Assert.Equal("kl_kd=0.5 loss=2 loss_kd=0.1235", ProgressMeter.Losses(values));
        Assert.Equal("", ProgressMeter.Losses(null));
    }

    /// <summary>The plain lines of a followed run: nothing before the student's first report, the rate measured from it, and no rate, time left or live queues once the run ended.</summary>
    [Fact]
    public void A_followed_runs_lines_measure_from_the_students_first_report()
    {
        var now = 0.0;
        var lines = new global::Cluster.Node.Hosting.RunLines(reasonElsewhere: true, seconds: () => now);
        global::Cluster.Contracts.Runs.RunSummary S(global::Cluster.Contracts.Runs.RunState state, long step, string? node, string? message = null) =>
            new("r", "n", "kd", state, step, 600, step, 3, 1, 2, 98.5, null, message, node, node);
        var training = global::Cluster.Contracts.Runs.RunState.Training;
        now = 4;
        Assert.Null(lines.Next(S(training, 0, null)));   // a resumed run is not at step 0: the student has not reported yet
        now = 6;
        var first = lines.Next(S(training, 100, "n1", "resumed at step 100 from its checkpoint"))!;
        Assert.StartsWith("[r] training step 100/600 batches: 100 made, 3 pooled, 1 queued, 2 at the student teacher 98.50% on n1 (resumed at step 100 from its checkpoint) | 16.7%", first);
        Assert.DoesNotContain("steps/s", first);   // one report is no rate (0 then 100 read as 50 steps/s)
        now = 8;
        Assert.EndsWith("| 20.0%, 10.0 steps/s, ETA 0:48, loss=0.5", lines.Next(S(training, 120, "n1"), () => "loss=0.5"));
        Assert.Null(lines.Next(S(training, 120, "n1")));   // nothing new
        now = 9;
        var failed = lines.Next(S(global::Cluster.Contracts.Runs.RunState.Failed, 130, "n1", "student failed"))!;
        Assert.Equal("[r] failed step 130/600 teacher 98.50% on n1 | 21.7%", failed);   // the reason is the caller's last line
    }
}
