using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Distill.Engine.Pipeline;

/// <summary>
/// A student trained on batches made and labelled elsewhere, with its method's
/// <see cref="StudentObjective"/>: what the engine loop and the pipeline's student entity both
/// step. For data-parallel replicas the step splits into <see cref="ComputeGradient"/> (on this
/// replica's slice) and <see cref="ApplyGradient"/> (with the all-reduced mean).
/// </summary>
public sealed class StudentTrainer : IDisposable
{
    private readonly ScheduledOptimizer opt;
    private readonly Parameter[] parameters;

    /// <param name="objective">the loss; default: the data-free soft-target loss at each batch's temperature</param>
    public StudentTrainer(Classifier student, TrainSpec train, long totalSteps, StudentObjective? objective = null)
    {
        Model = student;
        TotalSteps = totalSteps;
        Objective = objective ?? new StudentObjective.SoftTarget(1);
        parameters = student.parameters().ToArray();
        opt = ScheduledOptimizer.Create(parameters, train, totalSteps);
    }

    public Classifier Model { get; }
    public StudentObjective Objective { get; }
    public long Step { get; private set; }
    public long TotalSteps { get; }
    public bool Done => Step >= TotalSteps;
    public double Lr => opt.LrAt(Math.Max(0, Step - 1));
    /// <summary>Top-1 accuracy on the last batch trained with wantLoss, when it had labels.</summary>
    public double? LastBatchAccuracy { get; private set; }

    /// <summary>Number of gradient elements (the all-reduce size).</summary>
    public long GradientSize => parameters.Sum(p => p.numel());

    /// <summary>The soft-target loss (<see cref="Losses.Distillation.SoftTargetCrossEntropy"/>, the one checked against PyTorch).</summary>
    public static Tensor Loss(Tensor studentLogits, Tensor teacherProbs, double temperature) =>
        Losses.Distillation.SoftTargetCrossEntropy(studentLogits, teacherProbs, temperature);

    /// <summary>One step on a whole batch. Returns the loss when asked.</summary>
    public double? TrainStep(StudentBatch batch, bool wantLoss)
    {
        using var scope = NewDisposeScope();
        Model.train();
        opt.ZeroGrad();
        var logits = Model.call(batch.Images);
        var loss = Objective.Loss(logits, batch);
        loss.backward();
        opt.Step(Step);
        Step++;
        if (!wantLoss) return null;
        LastBatchAccuracy = batch.Labels is { } y ? logits.argmax(1).eq(y).to(float32).mean().item<float>() * 100 : null;
        return loss.item<float>();
    }

    /// <summary>A data-free step: images and the teacher's probabilities at temperature.</summary>
    public double? TrainStep(Tensor images, Tensor teacherProbs, double temperature, bool wantLoss) =>
        TrainStep(new StudentBatch(images, null, teacherProbs, temperature), wantLoss);

    /// <summary>The gradient of the loss on this slice as one flat float32 vector (caller owns it), and the loss.</summary>
    public (Tensor Gradient, double Loss) ComputeGradient(StudentBatch batch)
    {
        using var scope = NewDisposeScope();
        Model.train();
        opt.ZeroGrad();
        var loss = Objective.Loss(Model.call(batch.Images), batch);
        loss.backward();
        var flat = cat(parameters.Select(p => p.grad is { } g ? g.reshape(-1) : zeros(p.numel(), device: p.device)).ToArray())
            .to(float32).cpu().contiguous();
        return (flat.DetachFromDisposeScope(), loss.item<float>());
    }

    public (Tensor Gradient, double Loss) ComputeGradient(Tensor images, Tensor teacherProbs, double temperature) =>
        ComputeGradient(new StudentBatch(images, null, teacherProbs, temperature));

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
