using Cluster.Node.Telemetry;
using Prometheus;

namespace Cluster.Tests.Cluster;

/// <summary>A run's counters on a node outlive its end by a few scrapes, and then go: a long sweep leaves no series per trial behind.</summary>
public sealed class NodeMetricsTests
{
    private static async Task<string> Scrape()
    {
        using var s = new MemoryStream();
        await Metrics.DefaultRegistry.CollectAndExportAsTextAsync(s);
        return System.Text.Encoding.UTF8.GetString(s.ToArray());
    }

    [Fact]
    public async Task Should_remove_an_ended_runs_counters_only_after_its_delay_and_keep_every_other_runs()
    {
        var ended = "ended-" + Guid.NewGuid().ToString("N")[..8];
        var going = "going-" + Guid.NewGuid().ToString("N")[..8];
        foreach (var run in new[] { ended, going })
        {
            NodeMetrics.StudentSteps.WithLabels(run).Inc(60);
            NodeMetrics.StudentImages.WithLabels(run).Inc(960);
            NodeMetrics.GeneratedBatches.WithLabels(run).Inc(61);
            NodeMetrics.Rollbacks.WithLabels(run, "guard").Inc();
            NodeMetrics.Failovers.WithLabels(run, "student").Inc();
        }

        NodeMetrics.RetireRun(ended, TimeSpan.FromSeconds(1.5));
        // until then its last values are there to scrape
        var before = await Scrape();
        Assert.Contains($"clusterdistill_student_steps_total{{run=\"{ended}\"}} 60", before);
        Assert.Equal(5, before.Split('\n').Count(l => l.Contains($"run=\"{ended}\"")));

        var deadline = DateTime.UtcNow.AddSeconds(20);
        string after;
        while ((after = await Scrape()).Contains($"run=\"{ended}\"") && DateTime.UtcNow < deadline) await Task.Delay(200);
        Assert.DoesNotContain($"run=\"{ended}\"", after);
        Assert.Equal(5, after.Split('\n').Count(l => l.Contains($"run=\"{going}\"")));
        Assert.Contains($"clusterdistill_student_images_total{{run=\"{going}\"}} 960", after);
        NodeMetrics.RemoveRun(going);
        Assert.DoesNotContain($"run=\"{going}\"", await Scrape());
    }
}
