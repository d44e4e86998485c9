using Distill.Engine.Methods;
using Distill.Engine.Specs;

namespace Cluster.Tests;

public sealed class GuardTests
{
    private readonly DivergenceGuard guard = new(new GuardSpec { MinClasses = 3, MaxAccuracyDrop = 5 });

    [Fact]
    public void Nan_loss_is_unhealthy_and_named()
    {
        var v = guard.CheckStep(new Dictionary<string, double> { ["loss_kd"] = double.NaN });
        Assert.False(v.Healthy);
        Assert.Contains("loss_kd", v.Reason);
    }

    [Fact]
    public void Metrics_are_read_on_the_first_logged_checked_and_named_steps_and_any_that_is_not_finite_is_named()
    {
        var checking = new DivergenceGuard(new GuardSpec { CheckEvery = 40 });
        long[] Read(DivergenceGuard? g, Func<long, bool> alsoHere) =>
            [.. Enumerable.Range(1, 120).Select(i => (long)i).Where(s => DivergenceGuard.ReadsMetrics(g, s, 25, alsoHere(s)))];
        Assert.Equal([1, 25, 40, 50, 75, 80, 100, 120], Read(checking, _ => false));
        // without a guard nothing is read for it: only the first, the logged and the caller's steps
        Assert.Equal([1, 25, 50, 75, 99, 100], Read(null, s => s == 99));
        Assert.Null(DivergenceGuard.NotFinite(new Dictionary<string, double> { ["loss"] = 1e300, ["classes"] = 10 }));
        Assert.Equal("gen_std is -Infinity", DivergenceGuard.NotFinite(new Dictionary<string, double> { ["loss"] = 0.5, ["gen_std"] = double.NegativeInfinity }));
    }

    [Fact]
    public void Generator_collapse_to_few_classes_is_detected()
    {
        var v = guard.CheckStep(new Dictionary<string, double> { ["classes"] = 1, ["loss_kd"] = 0.3 });
        Assert.False(v.Healthy);
        Assert.Contains("collapse", v.Reason);
        Assert.True(guard.CheckStep(new Dictionary<string, double> { ["classes"] = 10, ["loss_kd"] = 0.3 }).Healthy);
    }

    [Fact]
    public void Constant_generator_output_with_zero_kl_is_collapse()
    {
        var v = guard.CheckStep(new Dictionary<string, double> { ["classes"] = 10, ["kl_kd"] = 0, ["gen_std"] = 1e-6 });
        Assert.False(v.Healthy);
    }

    [Fact]
    public void Accuracy_falling_from_the_best_is_divergence()
    {
        Assert.True(guard.CheckEvaluation(97.85).Healthy);
        Assert.True(guard.CheckEvaluation(95).Healthy);
        var v = guard.CheckEvaluation(86.45);   // the collapse seen with the official code on an H100
        Assert.False(v.Healthy);
        Assert.Contains("97.85", v.Reason);
    }
}
