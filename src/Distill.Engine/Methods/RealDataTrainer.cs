using Distill.Engine.Losses;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Distill.Engine.Methods;

/// <summary>The objective a model trains with on labelled data.</summary>
public abstract record RealDataObjective
{
    public sealed record CrossEntropy : RealDataObjective;
    public sealed record LabelSmoothing(double Epsilon) : RealDataObjective;
    public sealed record HintonKd(Classifier Teacher, double Temperature, double Alpha) : RealDataObjective;
    public sealed record VirtualTeacher(double CorrectProbability, double Temperature, double Alpha, Distillation.VirtualSoftening Softening) : RealDataObjective;
}

/// <summary>
/// Supervised training, LSR, Hinton KD (incl. Re-KD/De-KD, Tf-KD self) and Tf-KD reg: every method
/// that learns from real labelled batches, differing only in the loss.
/// </summary>
public sealed class RealDataTrainer : IStepTrainer
{
    private readonly Batches batches;
    private readonly ScheduledOptimizer optimizer;
    private readonly RealDataObjective objective;
    private readonly Device device;

    public RealDataTrainer(string phase, Classifier model, DataSplits data, TrainSpec train, RealDataObjective objective, Device device, long seed)
    {
        Phase = phase;
        Model = model;
        this.objective = objective;
        this.device = device;
        batches = new Batches(data.TrainX, data.TrainY, train.BatchSize, device, seed);
        TotalSteps = train.Steps > 0 ? train.Steps : train.Epochs * batches.StepsPerEpoch;
        optimizer = ScheduledOptimizer.Create(model.parameters(), train, TotalSteps);
        if (objective is RealDataObjective.HintonKd kd) Freeze(kd.Teacher);
    }

    public string Phase { get; }
    public long Step { get; private set; }
    public long TotalSteps { get; }
    public Classifier Model { get; }

    public IReadOnlyDictionary<string, double>? TrainStep(bool wantMetrics)
    {
        using var scope = NewDisposeScope();
        Model.train();
        var (x, y) = batches.Next();
        optimizer.ZeroGrad();
        var logits = Model.call(x);
        var loss = objective switch
        {
            RealDataObjective.CrossEntropy => F.cross_entropy(logits, y),
            RealDataObjective.LabelSmoothing ls => Distillation.LabelSmoothing(logits, y, ls.Epsilon),
            RealDataObjective.HintonKd kd => Distillation.Hinton(logits, TeacherLogits(kd.Teacher, x), y, kd.Temperature, kd.Alpha),
            RealDataObjective.VirtualTeacher v => Distillation.TfKdRegularization(logits, y, v.CorrectProbability, v.Temperature, v.Alpha, v.Softening),
            _ => throw new InvalidOperationException(objective.ToString()),
        };
        loss.backward();
        optimizer.Step(Step);
        Step++;
        if (!wantMetrics) return null;
        return new Dictionary<string, double>
        {
            ["loss"] = loss.item<float>(),
            ["lr"] = optimizer.LrAt(Step - 1),
            ["batch_accuracy"] = logits.argmax(1).eq(y).to(float32).mean().item<float>() * 100,
        };
    }

    private static Tensor TeacherLogits(Classifier teacher, Tensor x)
    {
        using var _ = no_grad();
        return teacher.call(x);
    }

    /// <summary>Eval mode and no parameter gradients: a teacher is read, never trained, by the other methods.</summary>
    public static void Freeze(Classifier teacher)
    {
        teacher.eval();
        foreach (var p in teacher.parameters()) p.requires_grad = false;
    }

    public Tensor? Samples(int count) => null;

    public void ScaleLearningRates(double factor) => optimizer.Scale *= factor;

    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "real-data/" + Phase);
        w.Write(Step);
        StateIo.WriteModule(w, Model);
        optimizer.Save(w);
        batches.Save(w);
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, "real-data/" + Phase);
        Step = r.ReadInt64();
        StateIo.ReadModule(r, Model);
        optimizer.Load(r);
        batches.Load(r);
    }

    public void Dispose()
    {
        batches.Dispose();
        optimizer.Dispose();
    }
}
