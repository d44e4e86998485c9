using Distill.Engine.Runs;

namespace Cluster.Tests;

/// <summary>metrics.csv as RunDirectory writes it and a reader meets it: blank cells, a torn last line, and a second header after a failover.</summary>
public sealed class MetricsCsvReaderTests
{
    [Fact]
    public void Should_read_rows_under_the_header_they_follow_and_skip_what_holds_no_row()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"cd-metrics-{Guid.NewGuid():N}");
        try
        {
            using (var run = new RunDirectory(dir))
            {
                run.Metrics("teacher", 10, 1.5, new Dictionary<string, double> { ["loss"] = 0.25 }, ["loss", "test_accuracy"]);
                run.Metrics("student-0", 20, 3, new Dictionary<string, double> { ["test_accuracy"] = 97.5, ["loss"] = double.NaN }, ["loss", "test_accuracy"]);
            }
            var lines = File.ReadAllLines(Path.Combine(dir, "metrics.csv")).ToList();
            // a coordinator that took over appends under a header of its own, with other columns
            lines.Add("phase,step,seconds,loss_kd");
            lines.Add("student-0,30,4.00,0.125");
            lines.Add("student-0,31,4.1");   // torn: a write in progress
            lines.Add("junk");

            var reader = new MetricsCsvReader();
            var rows = lines.Select(reader.Read).OfType<MetricsRecord>().ToList();
            Assert.Equal(3, rows.Count);
            Assert.Equal(("teacher", 10L, 1.5), (rows[0].Phase, rows[0].Step, rows[0].Seconds));
            Assert.Equal(new Dictionary<string, double> { ["loss"] = 0.25 }, rows[0].Values);
            Assert.Equal(97.5, rows[1].Values["test_accuracy"]);
            Assert.True(double.IsNaN(rows[1].Values["loss"]));
            Assert.Equal(new Dictionary<string, double> { ["loss_kd"] = 0.125 }, rows[2].Values);
            Assert.Equal(30, rows[2].Step);
            // a line before any header holds no row
            Assert.Null(new MetricsCsvReader().Read("student-0,30,4.00,0.125"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
