using Distill.Engine.Specs;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Distill.Engine.Training;

/// <summary>Optimiser and learning-rate schedule from a <see cref="TrainSpec"/>.</summary>
public sealed class ScheduledOptimizer(optim.Optimizer optimizer, TrainSpec spec, long totalSteps) : IDisposable
{
    public optim.Optimizer Optimizer { get; } = optimizer;

    /// <summary>Multiplies the scheduled rate; the divergence guard lowers it on rollback.</summary>
    public double Scale { get; set; } = 1.0;

    public double BaseLr => spec.Lr;

    public static ScheduledOptimizer Create(IEnumerable<Parameter> parameters, TrainSpec spec, long totalSteps)
    {
        optim.Optimizer opt = spec.Optimizer switch
        {
            "adam" => optim.Adam(parameters, spec.Lr, weight_decay: spec.WeightDecay),
            "sgd" => optim.SGD(parameters, spec.Lr, momentum: spec.Momentum, weight_decay: spec.WeightDecay),
            _ => throw new ArgumentException($"unknown optimizer '{spec.Optimizer}'"),
        };
        return new ScheduledOptimizer(opt, spec, totalSteps);
    }

    public double LrAt(long step)
    {
        var lr = spec.Schedule switch
        {
            "cosine" => 0.5 * spec.Lr * (1 + Math.Cos(Math.PI * Math.Min(step, totalSteps) / Math.Max(1, totalSteps))),
            "step" => spec.Lr * Math.Pow(spec.Gamma, spec.Milestones.Count(m => step >= m)),
            _ => spec.Lr,
        };
        return lr * Scale;
    }

    /// <summary>Sets the rate for this step, then steps.</summary>
    public void Step(long step)
    {
        var lr = LrAt(step);
        foreach (var g in Optimizer.ParamGroups) g.LearningRate = lr;
        Optimizer.step();
    }

    public void ZeroGrad() => Optimizer.zero_grad();

    public void Save(BinaryWriter w)
    {
        switch (Optimizer)
        {
            case Adam a: a.save_state_dict(w); break;
            case SGD s: s.save_state_dict(w); break;
            default: throw new NotSupportedException(Optimizer.GetType().Name);
        }
        w.Write(Scale);
    }

    public void Load(BinaryReader r)
    {
        switch (Optimizer)
        {
            case Adam a: a.load_state_dict(r); break;
            case SGD s: s.load_state_dict(r); break;
            default: throw new NotSupportedException(Optimizer.GetType().Name);
        }
        Scale = r.ReadDouble();
    }

    public void Dispose() => Optimizer.Dispose();
}
