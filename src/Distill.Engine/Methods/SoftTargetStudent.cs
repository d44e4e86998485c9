using Distill.Engine.Losses;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>
/// A student trained on batches labelled elsewhere: images and the teacher's probabilities at
/// temperature T, loss T^2 * CE(p_T, softmax(s / T)) averaged over the batch (T = 1 is DAFL's
/// student loss). For data-parallel replicas the step splits into <see cref="ComputeGradient"/>
/// (on this replica's slice) and <see cref="ApplyGradient"/> (with the all-reduced mean).
/// </summary>
public sealed class SoftTargetStudent : IDisposable
{
    private readonly ScheduledOptimizer opt;
    private readonly Parameter[] parameters;

    public SoftTargetStudent(Classifier student, TrainSpec train, long totalSteps)
    {
        Model = student;
        TotalSteps = totalSteps;
        parameters = student.parameters().ToArray();
        opt = ScheduledOptimizer.Create(parameters, train, totalSteps);
    }

    public Classifier Model { get; }
    public long Step { get; private set; }
    public long TotalSteps { get; }
    public bool Done => Step >= TotalSteps;
    public double Lr => opt.LrAt(Math.Max(0, Step - 1));

    /// <summary>Number of gradient elements (the all-reduce size).</summary>
    public long GradientSize => parameters.Sum(p => p.numel());

    /// <summary>The loss it trains with (<see cref="Distillation.SoftTargetCrossEntropy"/>, the one checked against PyTorch).</summary>
    public static Tensor Loss(Tensor studentLogits, Tensor teacherProbs, double temperature) =>
        Distillation.SoftTargetCrossEntropy(studentLogits, teacherProbs, temperature);

    /// <summary>One step on a whole batch. Returns the loss when asked.</summary>
    public double? TrainStep(Tensor images, Tensor teacherProbs, double temperature, bool wantLoss)
    {
        using var scope = NewDisposeScope();
        Model.train();
        opt.ZeroGrad();
        var loss = Loss(Model.call(images), teacherProbs, temperature);
        loss.backward();
        opt.Step(Step);
        Step++;
        return wantLoss ? loss.item<float>() : null;
    }

    /// <summary>The gradient of the loss on this slice as one flat float32 vector (caller owns it), and the loss.</summary>
    public (Tensor Gradient, double Loss) ComputeGradient(Tensor images, Tensor teacherProbs, double temperature)
    {
        using var scope = NewDisposeScope();
        Model.train();
        opt.ZeroGrad();
        var loss = Loss(Model.call(images), teacherProbs, temperature);
        loss.backward();
        var flat = cat(parameters.Select(p => p.grad is { } g ? g.reshape(-1) : zeros(p.numel(), device: p.device)).ToArray())
            .to(float32).cpu().contiguous();
        return (flat.DetachFromDisposeScope(), loss.item<float>());
    }

    /// <summary>Writes the (reduced) flat gradient into the parameters' .grad and takes the optimiser step.</summary>
    public void ApplyGradient(Tensor flat)
    {
        if (flat.numel() != GradientSize)
            throw new ArgumentException($"gradient of {flat.numel()} elements for a model of {GradientSize} parameters");
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            long offset = 0;
            foreach (var p in parameters)
            {
                var n = p.numel();
                var slice = flat.narrow(0, offset, n).view(p.shape).to(p.dtype).to(p.device);
                if (p.grad is { } g) g.copy_(slice);
                else p.grad = slice.clone().DetachFromDisposeScope();
                offset += n;
            }
        }
        opt.Step(Step);
        Step++;
    }

    public void ScaleLearningRates(double factor) => opt.Scale *= factor;

    /// <summary>The learning-rate scale the guard's rollbacks left (1 without any).</summary>
    public double LrScale { get => opt.Scale; set => opt.Scale = value; }

    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "soft-target-student");
        w.Write(Step);
        StateIo.WriteModule(w, Model);
        opt.Save(w);
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, "soft-target-student");
        Step = r.ReadInt64();
        StateIo.ReadModule(r, Model);
        opt.Load(r);
    }

    public void Dispose() => opt.Dispose();
}

/// <summary>The teacher's side of the pipeline: probabilities at temperature T.</summary>
public static class SoftLabels
{
    public static Tensor Label(Classifier teacher, Tensor images, double temperature)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var logits = teacher.call(images);
        return FromLogits(logits, temperature).DetachFromDisposeScope();
    }

    public static Tensor FromLogits(Tensor logits, double temperature) =>
        nn.functional.softmax(temperature == 1 ? logits : logits / temperature, 1);
}
