using Distill.Engine.Specs;
using Distill.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>The optimiser's schedule and max-norm constraint against values worked out by hand.</summary>
[Collection(TorchLane.Name), TorchLane]
public sealed class OptimizerTests
{
    public OptimizerTests() => Torch.Init();

    [Fact]
    public void Max_norm_scales_back_only_the_rows_that_are_too_long_and_never_the_bias()
    {
        using var layer = nn.Linear(3, 3);
        using (no_grad())
        {
            // row norms 5, 0.5 and exactly 1
            layer.weight!.copy_(tensor(new float[] { 3, 4, 0, 0.3f, 0, -0.4f, 0, 0.6f, 0.8f }, [3, 3]));
            layer.bias!.copy_(tensor(new float[] { 10, -20, 30 }));
        }
        // SGD without momentum and a zero gradient: the step itself moves nothing, so what changes is the constraint's
        using var opt = ScheduledOptimizer.Create(layer.parameters(), new TrainSpec { Optimizer = "sgd", Momentum = 0, Lr = 0.1, MaxNorm = 1 }, 10);
        foreach (var p in layer.parameters()) p.grad = zeros_like(p);
        opt.Step(0);

        var w = layer.weight!.data<float>().ToArray();
        // row 0: (3, 4, 0) / 5, torch.renorm's scale maxnorm / (norm + 1e-7)
        Assert.Equal(0.6, w[0], 5);
        Assert.Equal(0.8, w[1], 5);
        Assert.Equal(0.0, w[2], 5);
        // rows 1 and 2 are within the bound and stay as they were
        Assert.Equal(new[] { 0.3f, 0f, -0.4f, 0f, 0.6f, 0.8f }, w[3..]);
        Assert.Equal(new[] { 10f, -20f, 30f }, layer.bias!.data<float>().ToArray());
    }

    [Fact]
    public void Without_max_norm_a_long_row_is_left_alone()
    {
        using var layer = nn.Linear(2, 1, hasBias: false);
        using (no_grad()) layer.weight!.copy_(tensor(new float[] { 30, 40 }, [1, 2]));
        using var opt = ScheduledOptimizer.Create(layer.parameters(), new TrainSpec { Optimizer = "sgd", Momentum = 0, Lr = 0.1 }, 10);
        layer.weight!.grad = tensor(new float[] { 1, -2 }, [1, 2]);
        opt.Step(0);
        // w - lr * g = (30 - 0.1, 40 + 0.2), norm ~50: no constraint
        var w = layer.weight!.data<float>().ToArray();
        Assert.Equal(29.9, w[0], 4);
        Assert.Equal(40.2, w[1], 4);
    }

    [Fact]
    public void Max_norm_applies_after_the_step_it_follows()
    {
        using var layer = nn.Linear(2, 1, hasBias: false);
        using (no_grad()) layer.weight!.copy_(tensor(new float[] { 0.6f, 0 }, [1, 2]));
        using var opt = ScheduledOptimizer.Create(layer.parameters(), new TrainSpec { Optimizer = "sgd", Momentum = 0, Lr = 1, MaxNorm = 1 }, 10);
        layer.weight!.grad = tensor(new float[] { 0, -0.8f }, [1, 2]);
        opt.Step(0);
        // the step takes (0.6, 0) to (0.6, 0.8), norm 1: exactly at the bound, so kept (up to renorm's 1e-7)
        var w = layer.weight!.data<float>().ToArray();
        Assert.Equal(0.6, w[0], 5);
        Assert.Equal(0.8, w[1], 5);
        layer.weight!.grad = tensor(new float[] { -0.6f, -0.8f }, [1, 2]);
        opt.Step(1);
        // (1.2, 1.6), norm 2, scaled back to (0.6, 0.8)
        w = layer.weight!.data<float>().ToArray();
        Assert.Equal(0.6, w[0], 5);
        Assert.Equal(0.8, w[1], 5);
    }
}
