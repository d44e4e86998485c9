using Distill.Engine.Specs;
using Distill.Engine.Sweeps;

namespace Cluster.Tests;

/// <summary>Sweep specs are read as strictly as run specs: every path and value is checked against the method's schema first.</summary>
public sealed class SweepSpecTests
{
    private static readonly string KdBase = Path.Combine(Repo.Root(), "specs", "kd-mnist.yaml");

    private static string Sweep(string body, string? baseLine = null) =>
        $"name: s\n{baseLine ?? $"base: {KdBase}"}\n{body}";

    private const string Space = """
        space:
          student.train.lr: {loguniform: [0.0001, 0.01]}
          kd.temperature: {grid: [1, 4, 8]}
          kd.alpha: {grid: [0.1, 0.5, 0.9]}
        """;

    [Fact]
    public void Should_read_a_sweep_with_its_defaults_and_make_each_trials_spec_from_the_base()
    {
        var s = SweepParser.Parse(Sweep(Space + "\nsearch: {kind: grid, samples: 3}\nscheduler: {kind: asha, grace_period: 100}\n"), "k.yaml");
        Assert.Equal(3, s.Space.Count);
        Assert.Equal("max", s.Mode);
        Assert.Equal("test_accuracy", s.Metric);
        Assert.Equal(27, s.SearchTrials);
        Assert.Equal(s.TrialSteps, s.Scheduler.MaxSteps);
        Assert.Equal(2, s.Limits.MaxFailures);
        var config = new TrialConfig([new("student.train.lr", "0.003"), new("kd.temperature", "8"), new("kd.alpha", "0.9")]);
        var trial = SpecParser.Parse(SweepParser.TrialYaml(s, config, "s-t7", repeat: 2), "t.yaml");
        Assert.Equal("s-t7", trial.Name);
        Assert.Equal(0.003, trial.Student.Train.Lr);
        Assert.Equal(s.Base.Seed + 2, trial.Seed);
        Assert.Equal("kd", trial.Method.Name);
        // the loss as the metric: minimised by default
        Assert.Equal("min", SweepParser.Parse(Sweep(Space + "\nmetric: loss\n"), "k.yaml").Mode);
        Assert.True(SweepParser.IsSweep(Sweep(Space)));
        Assert.False(SweepParser.IsSweep(File.ReadAllText(KdBase)));
    }

    /// <summary>A base spec that holds out a validation split is chosen on it: val_accuracy by default, and the test set is refused as a metric.</summary>
    [Fact]
    public void Should_choose_on_the_validation_split_where_the_base_spec_holds_one_out()
    {
        var withSplit = File.ReadAllText(KdBase).Replace("data: {name: mnist, image_size: 32}", "data: {name: mnist, image_size: 32, validation: 5000}");
        Assert.Contains("validation: 5000", withSplit);
        var based = "base:\n" + string.Join("\n", withSplit.Split('\n').Where(l => !l.StartsWith('#')).Select(l => "  " + l));
        var s = SweepParser.Parse(Sweep(Space, based), "v.yaml");
        Assert.Equal(("val_accuracy", "max"), (s.Metric, s.Mode));
        Assert.True(s.IsAccuracy);
        var e = Assert.Throws<SpecException>(() => SweepParser.Parse(Sweep(Space + "\nmetric: test_accuracy\n", based), "v.yaml"));
        Assert.Equal("metric", e.Key);
        Assert.Contains("validation split", e.Message);
        // without a split, val_accuracy is not reported
        Assert.Throws<SpecException>(() => SweepParser.Parse(Sweep(Space + "\nmetric: val_accuracy\n"), "k.yaml"));
        Assert.Equal("val_accuracy", SweepParser.Load(Path.Combine(Repo.Root(), "specs", "sweeps", "dafl-table1-kd-val.yaml")).Metric);
    }

    public static IEnumerable<object[]> ShippedSweeps() =>
        Directory.GetFiles(Path.Combine(Repo.Root(), "specs", "sweeps"), "*.yaml").Order().Select(f => new object[] { Path.GetFileName(f) });

    [Theory]
    [MemberData(nameof(ShippedSweeps))]
    public void Every_shipped_sweep_is_valid(string file)
    {
        var s = SweepParser.Load(Path.Combine(Repo.Root(), "specs", "sweeps", file));
        Assert.Equal(Path.GetFileNameWithoutExtension(file), s.Name);
        Assert.True(s.SearchTrials >= 1);
    }

    [Fact]
    public void Should_journal_a_sweep_with_its_base_inline_so_that_an_edit_of_the_base_file_changes_nothing()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"cd-selfcontained-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "base.yaml"), File.ReadAllText(KdBase));
            var file = Path.Combine(dir, "s.yaml");
            File.WriteAllText(file, "name: s\nbase: base.yaml\n" + Space);
            var s = SweepParser.Load(file);
            var journalled = SweepParser.SelfContained(s);
            File.WriteAllText(Path.Combine(dir, "base.yaml"), File.ReadAllText(KdBase).Replace("temperature: 4", "temperature: 9"));
            File.Delete(Path.Combine(dir, "base.yaml"));
            var again = SweepParser.Parse(journalled, file);
            Assert.Equal(SpecParser.Write(s.Base), SpecParser.Write(again.Base));
            static string Text(SweepSpec x) => string.Join("; ", x.Space.Select(d => $"{d.Path} {d.Kind} {string.Join(",", d.Representatives())}"));
            Assert.Equal(Text(s), Text(again));
            Assert.Equal(journalled, SweepParser.SelfContained(again));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Should_take_an_inline_base_spec()
    {
        var s = SweepParser.Parse("""
            name: inline
            base:
              name: b
              method: lsr
              data: {name: mnist}
              student: {arch: lenet5-half, train: {epochs: 1}}
            space:
              lsr.epsilon: {uniform: [0.05, 0.2]}
            search: {kind: random, samples: 5}
            """, "i.yaml");
        Assert.Equal("lsr", s.Base.Method.Name);
        Assert.IsType<RangeDimension>(Assert.Single(s.Space));
    }

    public static IEnumerable<object[]> Malformed() =>
    [
        ["unknown path", "space:\n  kd.bogus: {choice: [1, 2]}\n", "space.kd.bogus", "not a key of method 'kd''s run spec"],
        ["empty range", "space:\n  kd.alpha: {uniform: [0.5, 0.5]}\nsearch: {kind: random, samples: 3}\n", "space.kd.alpha", "is empty"],
        ["loguniform at 0", "space:\n  student.train.lr: {loguniform: [0, 0.1]}\nsearch: {kind: random, samples: 3}\n", "space.student.train.lr", "bounds must be above 0"],
        ["metric not reported", Space + "\nmetric: loss_g\n", "metric", "reports test_accuracy and loss, not 'loss_g'"],
        ["unknown dimension kind", "space:\n  kd.alpha: {normal: [0, 1]}\n", "space.kd.alpha", "'normal' is not one of: choice, grid, uniform, loguniform, int"],
        ["empty list", "space:\n  kd.alpha: {choice: []}\n", "space.kd.alpha", "the list is empty"],
        ["value outside the schema", "space:\n  kd.alpha: {grid: [0.5, 2]}\n", "space.kd.alpha", "grid value 2: 2 is out of range [0, 1]"],
        ["unknown top-level key", Space + "\nschedular: {kind: asha}\n", "schedular", "unknown key"],
        ["scheduler key of another kind", Space + "\nscheduler: {kind: asha, quantile: 0.2}\n", "scheduler.quantile", "does not apply to the asha scheduler"],
        ["reduction factor 1", Space + "\nscheduler: {kind: asha, reduction_factor: 1}\n", "scheduler.reduction_factor", "out of range"],
        ["grace period past the end", Space + "\nscheduler: {kind: asha, grace_period: 1000000, max_steps: 100}\n", "scheduler.grace_period", "leaves no step to stop at"],
        ["max_steps past the trial", Space + "\nscheduler: {kind: asha, max_steps: 100000000}\n", "scheduler.max_steps", "is more than a trial's"],
        ["repeats with a swept seed", "space:\n  seed: {grid: [1, 2]}\nrepeats: 3\n", "repeats", "sweep the seed or repeat, not both"],
        ["repeats under asha", Space + "\nscheduler: {kind: asha}\nrepeats: 2\n", "repeats", "would mix results taken at different steps"],
        ["repeats under pbt", Space + "\nscheduler: {kind: pbt}\nrepeats: 3\n", "repeats", "with the pbt scheduler"],
        ["the method swept", "space:\n  method: {grid: [kd, lsr]}\n", "space.method", "cannot be swept"],
        ["int step that does not divide", "space:\n  seed: {int: [0, 10, 3]}\nsearch: {kind: random, samples: 2}\n", "space.seed", "is not low + a multiple of the step 3"],
        ["the trial length swept", "space:\n  student.train.epochs: {grid: [1, 5]}\n", "space.student.train.epochs", "changes a trial's length"],
        ["a path through a value", "space:\n  seed.x: {grid: [1]}\n", "space.seed.x", "'seed' holds a value, not a section"],
        ["grid search without grid dimensions", "space:\n  kd.alpha: {uniform: [0.1, 0.9]}\n", "search", "a grid search needs grid dimensions"],
        ["a tpe key on a grid search", Space + "\nsearch: {kind: grid, candidates: 5}\n", "search.candidates", "applies to the tpe search only"],
        ["bad mode", Space + "\nmode: maximum\n", "mode", "'maximum' is not one of: max, min"],
        ["a value listed twice", "space:\n  kd.alpha: {grid: [0.5, 0.5]}\n", "space.kd.alpha", "0.5 is listed twice"],
        ["a range that is not a list", "space:\n  kd.alpha: {uniform: 0.5}\n", "space.kd.alpha", "expected a list of values"],
        ["pbt sweeping the seed", "space:\n  seed: {grid: [1, 2]}\nscheduler: {kind: pbt}\n", "space", "pbt cannot perturb the seed"],
        ["pbt over a word", "space:\n  student.train.optimizer: {grid: [adam, sgd]}\nscheduler: {kind: pbt}\n", "space.student.train.optimizer", "pbt perturbs numbers, and 'adam' is not one"],
        ["a sweep too large", "space:\n  seed: {grid: [" + string.Join(", ", Enumerable.Range(0, 1001)) + "]}\n  kd.alpha: {grid: [" + string.Join(", ", Enumerable.Range(0, 1001).Select(i => (i / 1001.0).ToString("R", System.Globalization.CultureInfo.InvariantCulture))) + "]}\n",
            "space", "over the 1,000,000 a sweep may hold"],
        ["a limit below 0", Space + "\nlimits: {max_concurrent: 0}\n", "limits.max_concurrent", "out of range"],
    ];

    [Theory]
    [MemberData(nameof(Malformed))]
    public void Should_refuse_a_malformed_sweep_naming_the_key_and_the_reason(string what, string body, string key, string reason)
    {
        var e = Assert.Throws<SpecException>(() => SweepParser.Parse(Sweep(body), "bad.yaml"));
        Assert.True(e.Key == key, $"{what}: key '{e.Key}', expected '{key}' ({e.Message})");
        Assert.Contains(reason, e.Message);
        Assert.StartsWith("bad.yaml:", e.Message);
    }

    [Fact]
    public void Should_refuse_pbt_for_a_method_whose_student_samples_every_earlier_round()
    {
        var di = Path.Combine(Repo.Root(), "specs", "deepinversion-mnist-cpu.yaml");
        var e = Assert.Throws<SpecException>(() => SweepParser.Parse(
            Sweep("space:\n  deepinversion.lr: {grid: [0.05, 0.1]}\nscheduler: {kind: pbt, interval: 100}\n", $"base: {di}"), "b.yaml"));
        Assert.Equal("scheduler", e.Key);
        Assert.Contains("pbt: method 'deepinversion' trains on rounds of images that every later step samples again", e.Message);
        // the same sweep with asha is fine, and a pbt trial's source checkpoints at every pause step
        Assert.Equal("asha", SweepParser.Parse(Sweep("space:\n  deepinversion.lr: {grid: [0.05, 0.1]}\nscheduler: {kind: asha}\n", $"base: {di}"), "b.yaml").Scheduler.Kind);
        var pbt = SweepParser.Parse(Sweep(Space + "\nscheduler: {kind: pbt, interval: 94}\n"), "b.yaml");
        var trial = SweepParser.TrialYaml(pbt, new TrialConfig([new("kd.alpha", "0.5")]), "s-t0000", 0);
        Assert.Contains("generator_checkpoint_every: 94", trial);
    }

    [Fact]
    public void Should_refuse_a_missing_or_bad_base_spec()
    {
        Assert.Contains("required key is missing", Assert.Throws<SpecException>(() => SweepParser.Parse("name: s\n" + Space, "b.yaml")).Message);
        Assert.Contains("does not exist", Assert.Throws<SpecException>(() => SweepParser.Parse(Sweep(Space, "base: /nonexistent/x.yaml"), "b.yaml")).Message);
        var e = Assert.Throws<SpecException>(() => SweepParser.Parse(Sweep(Space, "base: {name: b, method: kd}"), "b.yaml"));
        Assert.Equal("base", e.Key);
        Assert.Contains("the base run spec is refused", e.Message);
        // the line of the offending key
        var line = Assert.Throws<SpecException>(() => SweepParser.Parse(Sweep("space:\n  kd.alpha: {grid: [0.5, 2]}\n"), "b.yaml"));
        Assert.StartsWith("b.yaml:4:", line.Message);
    }
}
