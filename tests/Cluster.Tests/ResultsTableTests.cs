using Cluster.Seed.Commands;
using Distill.Engine.Sweeps;

namespace Cluster.Tests;

/// <summary>`results`: configurations as rows with the hyperparameters as columns, mean ± std over repeats (worked by hand), best first.</summary>
public sealed class ResultsTableTests
{
    [Fact]
    public void Should_group_a_sweeps_trials_by_configuration_with_mean_and_sample_std_best_first()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"cd-results-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "trials.csv"), """
                trial,run,kd.temperature,kd.alpha,state,step,test_accuracy,best,rungs,attempt,reason
                t0000r0,s-t0000r0,1,0.1,completed,60,80,80,2,1,
                t0000r1,s-t0000r1,1,0.1,completed,60,84,84,2,1,
                t0001r0,s-t0001r0,4,0.9,stopped,20,30,30,1,1,"rung 0 (step 20): 30 is below, it says"
                t0001r1,s-t0001r1,4,0.9,failed,10,,,0,3,failed 3 time(s)
                t0002r0,s-t0002r0,16,0.5,completed,60,90,90,2,1,
                t0002r1,s-t0002r1,16,0.5,running,40,70,70,1,1,
                """);
            File.WriteAllText(Path.Combine(dir, "best.json"), """{"mode": "max"}""");
            var t = ResultsTable.FromSweep(dir);
            Assert.Equal(["kd.temperature", "kd.alpha"], t.Columns);
            Assert.Equal("test_accuracy", t.Metric);
            // 16/0.5: only its completed trial (90); 1/0.1: mean 82, std sqrt(((80-82)^2 + (84-82)^2) / 1) = 2.828; 4/0.9: the stopped trial alone
            // (one run has no sample standard deviation)
            Assert.Equal([(new[] { "16", "0.5" }, 90.0, (double?)null, 1), (["1", "0.1"], 82.0, Math.Sqrt(8), 2), (["4", "0.9"], 30.0, null, 1)],
                t.Rows.Select(r => (r.Values.ToArray(), r.Mean, r.Std, r.Count)));
            Assert.Contains("best (max test_accuracy): kd.temperature=16, kd.alpha=0.5: 90 over 1 run(s)", t.Format());
            Assert.Contains("82 ± 2.828", t.Format());
            // results.json: the configuration's values are numbers, a single run's std is null
            using (var json = System.Text.Json.JsonDocument.Parse(t.ToJson()))
            {
                var best = json.RootElement.GetProperty("best");
                Assert.Equal(16, best.GetProperty("config").GetProperty("kd.temperature").GetInt64());
                Assert.Equal(0.5, best.GetProperty("config").GetProperty("kd.alpha").GetDouble());
                Assert.Equal(System.Text.Json.JsonValueKind.Null, best.GetProperty("std").ValueKind);
            }
            // a sweep's table is of the metric it scores on
            Assert.Contains("scores its trials on test_accuracy", Assert.Throws<Distill.Engine.Specs.InputException>(() => ResultsTable.FromSweep(dir, "loss")).Message);
            Assert.Equal("test_accuracy", ResultsTable.FromSweep(dir, "test_accuracy").Metric);
            // tables show a sampled value to 4 significant digits; the files keep it whole
            Assert.Equal(["0.002835", "0.001", "sgd", "123456789", "1E-05"], new[] { "0.0028345657805928758", "0.001", "sgd", "123456789", "0.00001000000001" }.Select(ResultsTable.Display));
            Assert.Contains("t0001r0 (stopped)", string.Join(" ", t.Rows[2].Sources));
            var csv = t.ToCsv().Split('\n');
            Assert.Equal("kd.temperature,kd.alpha,test_accuracy_mean,test_accuracy_std,n,runs", csv[0].TrimEnd('\r'));
            Assert.StartsWith("1,0.1,82,2.828427125,2,", csv[2]);   // (10 significant digits: not the 16th digit summing leaves)
            // what the table leaves out is said under it: the running trial, the failed one
            Assert.Contains("note: 1 of 6 trials have not ended (1 running): the sweep is not finished", t.Format());
            Assert.Contains("note: 1 trial(s) failed or were cancelled: not in the table", t.Format());
            Assert.StartsWith("16,0.5,90,,1,", csv[1]);

            // a loss is minimised: the order turns over
            File.WriteAllText(Path.Combine(dir, "best.json"), """{"mode": "min"}""");
            Assert.Equal(["4", "0.9"], ResultsTable.FromSweep(dir).Best!.Values);

            // the command prints it and writes results.csv and results.json beside it
            var (o, e) = (new StringWriter(), new StringWriter());
            Assert.Equal(0, CommandLine.Dispatch(["results", dir], o, e));
            Assert.Contains("best (min test_accuracy)", o.ToString());
            Assert.True(File.Exists(Path.Combine(dir, "results.csv")) && File.Exists(Path.Combine(dir, "results.json")));
            Assert.Equal(2, CommandLine.Dispatch(["results", dir, "--metric", "loss"], o, e));   // not the sweep's metric
            Assert.Contains("metric loss: the sweep in", e.ToString());
            Assert.Equal(2, CommandLine.Dispatch(["results", Path.Combine(dir, "nothing")], o, e));   // bad input
            Assert.Contains("is neither a sweep", e.ToString());
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Should_take_the_keys_that_differ_between_run_directories_as_columns_and_seeds_as_repeats()
    {
        var root = Path.Combine(Path.GetTempPath(), $"cd-results-runs-{Guid.NewGuid():N}");
        try
        {
            string Run(string id, int seed, double lr, double accuracy)
            {
                var d = Path.Combine(root, id);
                Directory.CreateDirectory(d);
                File.WriteAllText(Path.Combine(d, "spec.resolved.yaml"), $"name: {id}\nmethod: kd\nseed: {seed}\nstudent:\n  arch: lenet5-half\n  train:\n    lr: {lr}\n    epochs: 2\n");
                File.WriteAllText(Path.Combine(d, "result.json"), $$"""{"student_accuracy": {{accuracy}}}""");
                return d;
            }
            var t = ResultsTable.FromRuns([Run("a", 1, 0.001, 90), Run("b", 2, 0.001, 92), Run("c", 1, 0.01, 95)]);
            Assert.Equal(["student.train.lr"], t.Columns);
            Assert.Equal([(new[] { "0.01" }, 95.0, 1), (["0.001"], 91.0, 2)], t.Rows.Select(r => (r.Values.ToArray(), r.Mean, r.Count)));
            Assert.Equal(Math.Sqrt(2), t.Rows[1].Std!.Value, 12);

            // another number of result.json; errors are best when fewest, and runs without it are left out
            File.WriteAllText(Path.Combine(root, "a", "result.json"), """{"student_accuracy": 90, "student_test_errors": 120}""");
            File.WriteAllText(Path.Combine(root, "b", "result.json"), """{"student_accuracy": 92, "student_test_errors": 80}""");
            File.WriteAllText(Path.Combine(root, "c", "result.json"), """{"student_accuracy": 95, "student_test_errors": 50}""");
            var errors = ResultsTable.FromRuns([Path.Combine(root, "a"), Path.Combine(root, "b"), Path.Combine(root, "c")], "student_test_errors");
            Assert.Equal(("student_test_errors", "min"), (errors.Metric, errors.Mode));
            // 0.001: mean (120 + 80) / 2 = 100, std sqrt((20^2 + 20^2) / 1) = 28.28
            Assert.Equal([(new[] { "0.01" }, 50.0, 1), (["0.001"], 100.0, 2)], errors.Rows.Select(r => (r.Values.ToArray(), r.Mean, r.Count)));
            Assert.Equal(Math.Sqrt(800), errors.Rows[1].Std!.Value, 12);
            // a run without it (null, as result.json says so) is left out; a name no run has is refused, with the names they have
            File.WriteAllText(Path.Combine(root, "a", "result.json"), """{"student_accuracy": 90, "student_test_errors": 120, "baseline_test_errors": null}""");
            var none = ResultsTable.FromRuns([Path.Combine(root, "a")], "baseline_test_errors");
            Assert.Empty(none.Rows);
            Assert.Contains("note: not in the table: a (no baseline_test_errors in their result.json)", none.Format());
            // a run given twice, or two runs of one configuration and seed, are not repeats
            Assert.Contains("is given more than once", Assert.Throws<Distill.Engine.Specs.InputException>(() =>
                ResultsTable.FromRuns([Path.Combine(root, "b"), Path.Combine(root, "b") + "/"])).Message);
            Run("b2", 2, 0.001, 92);
            Assert.Contains("are one configuration with the same seed (2): not repeats", Assert.Throws<Distill.Engine.Specs.InputException>(() =>
                ResultsTable.FromRuns([Path.Combine(root, "b"), Path.Combine(root, "b2")])).Message);
            var typo = Assert.Throws<Distill.Engine.Specs.InputException>(() => ResultsTable.FromRuns([Path.Combine(root, "a"), Path.Combine(root, "b")], "student_acuracy"));
            Assert.Equal("metric student_acuracy: no run's result.json has it; they have student_accuracy, student_test_errors", typo.Message);
            Assert.Throws<Distill.Engine.Specs.InputException>(() => ResultsTable.FromRuns([root]));
        }
        finally { Directory.Delete(root, recursive: true); }
    }
}
