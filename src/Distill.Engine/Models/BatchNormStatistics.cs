using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Distill.Engine.Models;

/// <summary>One BatchNorm layer's input statistics for the last forward pass, next to its running ones.</summary>
public sealed record BatchNormObservation(string Layer, Tensor BatchMean, Tensor BatchVar, Tensor RunningMean, Tensor RunningVar);

/// <summary>
/// Collects every BatchNorm2d layer's batch statistics (mean and biased variance of its input over
/// N, H, W) through forward hooks, without touching the model's code. DeepInversion's R_feature
/// compares them with the running statistics the layer stored while the teacher trained.
/// The observed tensors belong to the caller's dispose scope; <see cref="Clear"/> between steps.
/// </summary>
public sealed class BatchNormStatistics : IDisposable
{
    private readonly List<Action> removers = [];
    private readonly List<BatchNormObservation> observed = [];

    public BatchNormStatistics(nn.Module model)
    {
        foreach (var (name, module) in model.named_modules())
        {
            if (module is not BatchNorm2d bn) continue;
            var layer = name;
            var handle = bn.register_forward_hook((m, input, output) =>
            {
                if (Enabled) Observe(layer, (BatchNorm2d)m, input);
                return output;
            });
            removers.Add(handle.remove);
        }
        if (removers.Count == 0) throw new ArgumentException("the model has no BatchNorm2d layer to take statistics from");
    }

    public bool Enabled { get; set; } = true;

    public int LayerCount => removers.Count;

    public IReadOnlyList<BatchNormObservation> Observed => observed;

    public void Clear() => observed.Clear();

    private void Observe(string layer, BatchNorm2d bn, Tensor input)
    {
        var mean = input.mean([0, 2, 3]);
        var variance = input.transpose(0, 1).flatten(1).var(1, unbiased: false);
        observed.Add(new BatchNormObservation(layer, mean, variance,
            bn.running_mean ?? throw new InvalidOperationException($"{layer} tracks no running mean"),
            bn.running_var ?? throw new InvalidOperationException($"{layer} tracks no running variance")));
    }

    public void Dispose()
    {
        foreach (var remove in removers) remove();
        removers.Clear();
    }
}
