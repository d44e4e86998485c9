using System.Globalization;
using Distill.Engine.Sweeps;

namespace Cluster.Tests;

/// <summary>
/// Searchers and schedulers against decisions worked out by hand (the quantiles in the comments),
/// and their determinism: the same sweep and the same reports give the same choices.
/// </summary>
public sealed class SweepSearchTests
{
    private static readonly string KdBase = Path.Combine(Repo.Root(), "specs", "kd-mnist.yaml");

    private static SweepSpec Parse(string body) => SweepParser.Parse($"name: s\nseed: 5\nbase: {KdBase}\n{body}", "s.yaml");

    private static TrialConfig Config(params (string Path, string Value)[] v) => new(v.Select(x => new KeyValuePair<string, string>(x.Path, x.Value)).ToArray());

    private static double Num(TrialConfig c, string path) => double.Parse(c[path], CultureInfo.InvariantCulture);

    [Fact]
    public void Grid_makes_every_combination_last_dimension_fastest_and_draws_the_others_the_same_way_again()
    {
        var s = Parse("""
            space:
              student.train.lr: {loguniform: [0.0001, 0.01]}
              kd.temperature: {grid: [1, 4, 8]}
              kd.alpha: {grid: [0.1, 0.5, 0.9]}
            search: {kind: grid, samples: 2}
            """);
        var g = Searcher.For(s);
        Assert.Equal(18, g.Total);
        var configs = Enumerable.Range(0, 18).Select(i => g.Suggest(i, [])!).ToArray();
        Assert.Null(g.Suggest(18, []));
        Assert.Equal(("1", "0.1"), (configs[0]["kd.temperature"], configs[0]["kd.alpha"]));
        Assert.Equal(("1", "0.5"), (configs[1]["kd.temperature"], configs[1]["kd.alpha"]));
        Assert.Equal(("4", "0.1"), (configs[3]["kd.temperature"], configs[3]["kd.alpha"]));
        Assert.Equal(9, configs[..9].Select(c => (c["kd.temperature"], c["kd.alpha"])).Distinct().Count());
        // the second pass repeats the grid with fresh draws of the range
        Assert.Equal(configs[..9].Select(c => (c["kd.temperature"], c["kd.alpha"])), configs[9..].Select(c => (c["kd.temperature"], c["kd.alpha"])));
        Assert.All(configs, c => Assert.InRange(Num(c, "student.train.lr"), 1e-4, 1e-2));
        Assert.Equal(18, configs.Select(c => c["student.train.lr"]).Distinct().Count());
        // a searcher made again (a resumed sweep) makes the same configurations
        var again = Searcher.For(s);
        Assert.All(Enumerable.Range(0, 18), i => Assert.Equal(configs[i], again.Suggest(i, [])));

        // shuffled: the same nine combinations in another order, the same order again from the same seed
        var shuffled = Parse("space:\n  kd.temperature: {grid: [1, 4, 8]}\n  kd.alpha: {grid: [0.1, 0.5, 0.9]}\nsearch: {kind: grid, shuffle: true}\n");
        var visit = Enumerable.Range(0, 9).Select(i => Searcher.For(shuffled).Suggest(i, [])!).Select(c => (c["kd.temperature"], c["kd.alpha"])).ToArray();
        Assert.Equal(configs[..9].Select(c => (c["kd.temperature"], c["kd.alpha"])).Order(), visit.Order());
        Assert.NotEqual(configs[..9].Select(c => (c["kd.temperature"], c["kd.alpha"])), visit);
    }

    [Fact]
    public void Random_draws_uniformly_in_the_log_of_a_loguniform_range_and_only_the_grid_of_an_int_range()
    {
        var s = Parse("""
            space:
              student.train.lr: {loguniform: [0.0001, 0.01]}
              seed: {int: [0, 20, 5]}
              kd.alpha: {choice: [0.1, 0.9]}
            search: {kind: random, samples: 4000}
            """);
        var r = Searcher.For(s);
        var configs = Enumerable.Range(0, 4000).Select(i => r.Suggest(i, [])!).ToArray();
        var logs = configs.Select(c => Math.Log10(Num(c, "student.train.lr"))).ToArray();
        // uniform on [-4, -2]: mean -3, a quarter below -3.5
        Assert.InRange(logs.Average(), -3.05, -2.95);
        Assert.InRange(logs.Count(x => x < -3.5) / 4000.0, 0.22, 0.28);
        Assert.Equal(["0", "10", "15", "20", "5"], configs.Select(c => c["seed"]).Distinct().Order());
        Assert.InRange(configs.Count(c => c["kd.alpha"] == "0.1") / 4000.0, 0.46, 0.54);
        Assert.Null(r.Suggest(4000, []));
    }

    /// <summary>On a smooth objective, TPE's later suggestions gather near the optimum, and more closely than random draws.</summary>
    [Fact]
    public void Tpe_concentrates_near_the_optimum_and_repeats_itself_on_the_same_history()
    {
        string Sweep(string kind) => $$"""
            space:
              student.train.lr: {loguniform: [0.0001, 0.01]}
              kd.alpha: {uniform: [0, 1]}
              kd.temperature: {choice: [1, 2, 4, 8, 16]}
            search: {kind: {{kind}}, samples: 80}
            """;
        // best at lr 1e-3, alpha 0.7, T 4
        static double Objective(TrialConfig c) =>
            -Math.Pow(Math.Log10(Num(c, "student.train.lr")) + 3, 2) - Math.Pow(Num(c, "kd.alpha") - 0.7, 2) * 4 - (c["kd.temperature"] == "4" ? 0 : 0.5);

        double LateRegret(string kind, out List<Observation> history)
        {
            var s = Parse(Sweep(kind));
            var searcher = Searcher.For(s);
            history = [];
            for (var i = 0; i < 80; i++)
            {
                var c = searcher.Suggest(i, history)!;
                history.Add(new Observation(c, Objective(c)));
            }
            return history.Skip(40).Average(o => -o.Score);
        }

        var tpe = LateRegret("tpe", out var tpeHistory);
        var random = LateRegret("random", out _);
        Assert.True(tpe < random / 2, $"TPE's mean regret over trials 40-79 is {tpe:F3}, random's {random:F3}");
        Assert.True(tpeHistory.Skip(40).Count(o => o.Config["kd.temperature"] == "4") >= 20, "TPE did not settle on the best temperature");
        // the first startup_trials are the random searcher's own draws
        var r = Searcher.For(Parse(Sweep("random")));
        Assert.All(Enumerable.Range(0, 10), i => Assert.Equal(tpeHistory[i].Config, r.Suggest(i, [])));
        // the same history gives the same suggestion (a resumed sweep)
        var t2 = Searcher.For(Parse(Sweep("tpe")));
        Assert.Equal(tpeHistory[60].Config, t2.Suggest(60, tpeHistory[..60]));
    }

    private static SweepSpec Scheduled(string scheduler) => Parse($$"""
        space:
          student.train.lr: {loguniform: [0.0001, 0.01]}
          kd.alpha: {choice: [0.1, 0.5, 0.9]}
        search: {kind: random, samples: 20}
        scheduler: {{scheduler}}
        """);

    private static readonly TrialConfig Any = Config(("student.train.lr", "0.001"), ("kd.alpha", "0.5"));

    [Fact]
    public void Asha_promotes_the_top_third_at_each_rung_against_the_trials_there_before()
    {
        var asha = (AshaScheduler)Scheduler.For(Scheduled("{kind: asha, grace_period: 10, reduction_factor: 3, max_steps: 90, mode: stop}"));
        Assert.Equal([10L, 30L], asha.Milestones);
        Verdict V(string t, long step, double score) => asha.OnReport(new TrialReport(t, step, score, Any)).Verdict;
        Assert.Equal(Verdict.Continue, V("A", 10, 0.5));   // first at the rung
        Assert.Equal(Verdict.Stop, V("B", 10, 0.3));       // 2/3-quantile of [0.5] = 0.5
        Assert.Equal(Verdict.Continue, V("C", 10, 0.7));   // of [0.3, 0.5] = 0.3 + 2/3 * 0.2 = 0.4333
        Assert.Equal(Verdict.Stop, V("D", 12, 0.45));      // of [0.3, 0.5, 0.7] = 0.5 + 1/3 * 0.2 = 0.5667
        Assert.Equal(Verdict.Continue, V("E", 10, 0.57));  // 0.57 >= 0.5667
        Assert.Equal(Verdict.Continue, V("A", 20, 0.1));   // between rungs: nothing to decide
        Assert.Equal(Verdict.Continue, V("A", 30, 0.6));   // first at rung 1
        var stop = asha.OnReport(new TrialReport("C", 33, 0.55, Any));
        Assert.Equal(Verdict.Stop, stop.Verdict);          // of [0.6] = 0.6
        Assert.Contains("rung 1 (step 30)", stop.Reason);
        Assert.Equal(Verdict.Continue, V("A", 60, 0.2));   // rung 1 passed already; no rung at 90 (= max_steps)
        Assert.Equal(Verdict.Stop, V("A", 90, 0.9));       // max_steps
        Assert.Equal(5, asha.At(10).Count);
        Assert.Equal(2, asha.At(30).Count);
    }

    [Fact]
    public void Asha_with_promotions_sends_on_only_the_top_of_a_rung_highest_rung_first_and_settles_what_is_left()
    {
        // rungs at 10 and 30 (grace 10, rf 3, max 90); scores higher is better
        long[] m = AshaPromotions.Milestones(new SchedulerSettings { Kind = "asha", GracePeriod = 10, ReductionFactor = 3, MaxSteps = 90 });
        Assert.Equal([10L, 30L], m);
        RungTrial T(string id, RungPosition p, params double[] s) => new(id, s, p);
        // two at rung 0: quota floor(2/3) = 0, nobody goes on yet
        Assert.Null(AshaPromotions.Next([T("a", RungPosition.Paused, 0.5), T("b", RungPosition.Paused, 0.7)], m, 3));
        // a third: quota 1, the best paused one (b) goes on, to the next rung's step
        var three = new[] { T("a", RungPosition.Paused, 0.5), T("b", RungPosition.Paused, 0.7), T("c", RungPosition.Paused, 0.6) };
        var first = AshaPromotions.Next(three, m, 3)!;
        Assert.Equal(("b", 30L), (first.TrialId, first.HoldAt!.Value));
        // once b runs on, the top of rung 0 has gone on
        var after = new[] { three[0], T("b", RungPosition.Running, 0.7), three[2] };
        Assert.Null(AshaPromotions.Next(after, m, 3));
        // a fourth that beats b there is the top now, and goes on too (Algorithm 2 promotes any of the
        // current top not yet promoted; a count of past promotions stopped the best trial of the rung)
        var fourth = AshaPromotions.Next([.. after, T("d", RungPosition.Paused, 0.9)], m, 3)!;
        Assert.Equal(("d", true, 30L), (fourth.TrialId, fourth.Promote, fourth.HoldAt!.Value));
        Assert.Contains("is in the top 1 of 4", fourth.Reason);
        // the best of rung 0 still running does not block a paused one only when it is in the top:
        // six trials, quota 2; the top two are d (running on) and b (paused): b goes
        var six = new[] { T("a", RungPosition.Paused, 0.1), T("b", RungPosition.Paused, 0.8), T("c", RungPosition.Paused, 0.2),
                          T("d", RungPosition.Running, 0.9), T("e", RungPosition.Paused, 0.3), T("f", RungPosition.Paused, 0.4) };
        Assert.Equal("b", AshaPromotions.Next(six, m, 3)!.TrialId);
        // rung 1 before rung 0: three at rung 1 (quota 1) with one paused in its top goes first, to the end (null)
        var high = new[] { T("a", RungPosition.Paused, 0.9, 0.95), T("b", RungPosition.Out, 0.8, 0.5), T("c", RungPosition.Out, 0.7, 0.4),
                           T("d", RungPosition.Paused, 0.6), T("e", RungPosition.Paused, 0.5), T("f", RungPosition.Paused, 0.4) };
        var top = AshaPromotions.Next(high, m, 3)!;
        Assert.Equal("a", top.TrialId);
        Assert.Null(top.HoldAt);

        // settling: nothing went past rung 0, so its best goes on; with one gone past, the rest stop
        var left = AshaPromotions.Settle([T("a", RungPosition.Paused, 0.5), T("b", RungPosition.Paused, 0.7)], m);
        Assert.Equal([("b", true)], left.Select(d => (d.TrialId, d.Promote)));
        var beaten = AshaPromotions.Settle([T("a", RungPosition.Paused, 0.5), T("b", RungPosition.Done, 0.7, 0.8), T("c", RungPosition.Paused, 0.6)], m);
        Assert.Equal([("c", false), ("a", false)], beaten.Select(d => (d.TrialId, d.Promote)));
        // nothing is settled while a trial runs
        Assert.Empty(AshaPromotions.Settle([T("a", RungPosition.Paused, 0.5), T("b", RungPosition.Running, 0.7)], m));
    }

    [Fact]
    public void Median_stopping_compares_the_best_so_far_with_the_median_of_the_others_running_means()
    {
        var m = Scheduler.For(Scheduled("{kind: median, grace_period: 10, min_samples: 2}"));
        Verdict V(string t, long step, double score) => m.OnReport(new TrialReport(t, step, score, Any)).Verdict;
        Assert.Equal(Verdict.Continue, V("A", 5, 0.1));    // grace period
        Assert.Equal(Verdict.Continue, V("A", 10, 0.5));   // one other trial is not enough (B: none yet)
        Assert.Equal(Verdict.Continue, V("B", 10, 0.6));   // others: A only
        Assert.Equal(Verdict.Stop, V("C", 10, 0.29));      // others' means: A (0.1+0.5)/2 = 0.3, B 0.6: median 0.45 > 0.29
        Assert.Equal(Verdict.Continue, V("D", 10, 0.46));  // others: A 0.3, B 0.6, C 0.29: median 0.3
        Assert.Equal(Verdict.Continue, V("A", 20, 0.2));   // A's best 0.5; others: B 0.6, C 0.29, D 0.46: median 0.46
    }

    [Fact]
    public void Pbt_makes_the_bottom_quantile_at_a_pause_copy_a_top_trial_with_perturbed_hyperparameters()
    {
        var spec = Scheduled("{kind: pbt, interval: 10, quantile: 0.25, resample_probability: 0, max_steps: 90}");
        var pbt = (PbtScheduler)Scheduler.For(spec);
        var a = Config(("student.train.lr", "0.001"), ("kd.alpha", "0.5"));
        var b = Config(("student.train.lr", "0.005"), ("kd.alpha", "0.1"));
        PbtTrial T(string id, TrialConfig c, long? copyable, params (long Step, double Score)[] at) =>
            new(id, at.ToDictionary(x => x.Step, x => x.Score), copyable, c);

        // pauses every interval, and at max_steps (90), short of the trial's end, where it stops
        Assert.Equal(10L, pbt.HoldAfter(0));
        Assert.Equal(20L, pbt.HoldAfter(10));
        Assert.Equal(20L, pbt.HoldAfter(13));
        Assert.Equal(90L, pbt.HoldAfter(80));
        Assert.True(pbt.EndsAt(90));
        Assert.False(pbt.EndsAt(80));
        Assert.Null(pbt.HoldAfter(90));

        // alone at its step: it goes on
        Assert.False(pbt.AtPause("B", 10, [T("B", b, 10, (10, 0.1))], 1).Exploit);
        // two trials at step 10: the bottom one (ceil(2 * 0.25) = 1) copies the top one's latest checkpoint
        var d = pbt.AtPause("B", 10, [T("A", a, 20, (10, 0.9), (20, 0.92)), T("B", b, 10, (10, 0.1))], 1);
        Assert.True(d.Exploit);
        Assert.Equal(("A", 20L), (d.Source, d.SourceStep));
        Assert.Contains(Num(d.Config!, "student.train.lr"), new[] { 0.001 * 0.8, 0.001 * 1.2 });
        Assert.Contains(d.Config!["kd.alpha"], new[] { "0.1", "0.9" });
        // the top trial goes on as it is
        Assert.False(pbt.AtPause("A", 10, [T("A", a, 20, (10, 0.9)), T("B", b, 10, (10, 0.1))], 1).Exploit);
        // compared at the same step: A's later, better score does not count against B at step 10
        Assert.False(pbt.AtPause("B", 10, [T("A", a, 20, (20, 0.99)), T("B", b, 10, (10, 0.1))], 1).Exploit);
        // a top trial whose checkpoint is not kept cannot be copied
        var none = pbt.AtPause("B", 10, [T("A", a, null, (10, 0.9)), T("B", b, 10, (10, 0.1))], 1);
        Assert.False(none.Exploit);
        Assert.Contains("no top trial's checkpoint", none.Reason);
        // eight trials: the bottom two copy from the top two
        var eight = Enumerable.Range(0, 8).Select(i => T($"t{i}", a, 10, (10, i / 10.0))).ToArray();
        Assert.False(pbt.AtPause("t2", 10, eight, 1).Exploit);
        var low = pbt.AtPause("t1", 10, eight, 1);
        Assert.True(low.Exploit);
        Assert.Contains(low.Source, new[] { "t7", "t6" });

        // the same pause gives the same decision
        Assert.Equal(d, pbt.AtPause("B", 10, [T("A", a, 20, (10, 0.9), (20, 0.92)), T("B", b, 10, (10, 0.1))], 1));
    }

    [Fact]
    public void Quantiles_interpolate_between_order_statistics()
    {
        Assert.Equal(0.5, Scheduler.Quantile([0.9, 0.1, 0.5], 0.5));
        Assert.Equal(0.1 + 0.8 * 0.75, Scheduler.Quantile([0.9, 0.1], 0.75), 12);
        Assert.Equal(3.0, Scheduler.Quantile([3.0], 0.66));
    }
}
