using Distill.Engine.Models;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>
/// Every method that learns from real labelled batches (supervised training, LSR, Hinton KD with
/// Re-KD and De-KD, Tf-KD self and reg), in one loop made of the parts the actor pipeline spreads
/// over a source, a teacher and student entities: a <see cref="RealDataSource"/> draws the batch,
/// the teacher (when the objective needs one) labels it at T, and the <see cref="StudentTrainer"/>
/// takes a step with the method's <see cref="StudentObjective"/>. Both paths compute the same numbers.
/// </summary>
public sealed class RealDataTrainer : IStepTrainer
{
    private readonly RealDataSource source;
    private readonly StudentTrainer student;
    private readonly Classifier? teacher;

    public RealDataTrainer(string phase, Classifier model, DataSplits data, TrainSpec train, StudentObjective objective, Device device, long seed, Classifier? teacher = null)
    {
        if (objective.SoftLabelTemperature is not null && teacher is null) throw new ArgumentException($"{objective.GetType().Name} needs a teacher");
        Phase = phase;
        this.teacher = teacher;
        if (teacher is not null) Freeze(teacher);
        source = new RealDataSource(data, train.BatchSize, device, seed);
        TotalSteps = TotalStepsOf(train, source.StepsPerEpoch);
        student = new StudentTrainer(model, train, TotalSteps, objective);
    }

    /// <summary>Steps of a training spec over a training set of this many batches per epoch.</summary>
    public static long TotalStepsOf(TrainSpec train, long stepsPerEpoch) => train.Steps > 0 ? train.Steps : train.Epochs * stepsPerEpoch;

    public string Phase { get; }
    public long Step => student.Step;
    public long TotalSteps { get; }
    public Classifier Model => student.Model;

    public IReadOnlyDictionary<string, double>? TrainStep(bool wantMetrics)
    {
        using var batch = source.Next(false);
        var temperature = student.Objective.SoftLabelTemperature;
        using var soft = temperature is { } t ? SoftLabels.Label(teacher!, batch.Images, t) : null;
        var loss = student.TrainStep(new StudentBatch(batch.Images, batch.Labels, soft, temperature ?? 1), wantMetrics);
        if (loss is not { } l) return null;
        return new Dictionary<string, double>
        {
            [student.Objective.LossName] = l,
            [student.Objective.LrName] = student.Lr,
            ["batch_accuracy"] = student.LastBatchAccuracy ?? double.NaN,
        };
    }

    /// <summary>Eval mode and no parameter gradients: a teacher is read, never trained, by the other methods.</summary>
    public static void Freeze(Classifier teacher)
    {
        teacher.eval();
        foreach (var p in teacher.parameters()) p.requires_grad = false;
    }

    public Tensor? Samples(int count) => null;

    public void ScaleLearningRates(double factor) => student.ScaleLearningRates(factor);

    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "real-data/" + Phase);
        student.SaveState(w);
        source.SaveState(w);
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, "real-data/" + Phase);
        student.LoadState(r);
        source.LoadState(r);
    }

    public void Dispose()
    {
        source.Dispose();
        student.Dispose();
    }
}
