using Distill.Engine.Specs;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Distill.Engine.Training;

/// <summary>Optimiser, learning-rate schedule and weight constraint from a <see cref="TrainSpec"/>.</summary>
public sealed class ScheduledOptimizer(optim.Optimizer optimizer, TrainSpec spec, long totalSteps, IReadOnlyList<Parameter>? constrained = null) : IDisposable
{
    public optim.Optimizer Optimizer { get; } = optimizer;

    /// <summary>Multiplies the scheduled rate; the divergence guard lowers it on rollback.</summary>
    public double Scale { get; set; } = 1.0;

    public double BaseLr => spec.Lr;

    public static ScheduledOptimizer Create(IEnumerable<Parameter> parameters, TrainSpec spec, long totalSteps)
    {
        var list = parameters.ToList();
        optim.Optimizer opt = spec.Optimizer switch
        {
            "adam" => optim.Adam(list, spec.Lr, weight_decay: spec.WeightDecay),
            "sgd" => optim.SGD(list, spec.Lr, momentum: spec.Momentum, weight_decay: spec.WeightDecay),
            _ => throw new ArgumentException($"unknown optimizer '{spec.Optimizer}'"),
        };
        // max-norm constrains weights (a Linear's rows, a convolution's filters), never biases
        return new ScheduledOptimizer(opt, spec, totalSteps, spec.MaxNorm > 0 ? list.Where(p => p.dim() >= 2).ToList() : null);
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

    /// <summary>Sets the rate for this step, steps, then applies the max-norm constraint.</summary>
    public void Step(long step)
    {
        var lr = LrAt(step);
        foreach (var g in Optimizer.ParamGroups) g.LearningRate = lr;
        Optimizer.step();
        if (constrained is not null) ApplyMaxNorm(constrained, spec.MaxNorm);
    }

    /// <summary>
    /// Hinton et al. 2012's weight constraint: each unit's incoming weight vector (row `i` of a weight,
    /// over all its other dimensions) is scaled back to L2 norm `maxNorm` where it is longer
    /// (torch.renorm(w, 2, 0, maxNorm)).
    /// </summary>
    public static void ApplyMaxNorm(IEnumerable<Parameter> weights, double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var w in weights) w.copy_(w.renorm(2, 0, (float)maxNorm));
    }

    public void ZeroGrad() => Optimizer.zero_grad();

    /// <summary>Optimiser state as one length-prefixed block, so a reader never depends on how much TorchSharp reads.</summary>
    public void Save(BinaryWriter w)
    {
        using var ms = new MemoryStream();
        using (var inner = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            switch (Optimizer)
            {
                case Adam a: a.save_state_dict(inner); break;
                case SGD s: s.save_state_dict(inner); break;
                default: throw new NotSupportedException(Optimizer.GetType().Name);
            }
        }
        Methods.StateIo.WriteBytes(w, ms.ToArray());
        w.Write(Scale);
    }

    public void Load(BinaryReader r)
    {
        using var inner = new BinaryReader(new MemoryStream(Methods.StateIo.ReadBytes(r)));
        switch (Optimizer)
        {
            case Adam a: a.load_state_dict(inner); break;
            case SGD s: s.load_state_dict(inner); break;
            default: throw new NotSupportedException(Optimizer.GetType().Name);
        }
        Scale = r.ReadDouble();
        // TorchSharp loads each group's settings too: the spec's stand (a PBT fork perturbs them;
        // the learning rate is set from the spec at every step anyway)
        foreach (var g in Optimizer.ParamGroups.OfType<ParamGroup>())
            switch (g.Options)
            {
                case SGD.Options o: (o.momentum, o.weight_decay) = (spec.Momentum, spec.WeightDecay); break;
                case Adam.Options o: o.weight_decay = spec.WeightDecay; break;
            }
    }

    public void Dispose() => Optimizer.Dispose();
}
