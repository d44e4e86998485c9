using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using static TorchSharp.torch;

namespace Distill.Engine.Pipeline;

/// <summary>
/// The engine loop of a method with a stepwise source, made of the parts the actor pipeline
/// spreads over a source, a teacher and student entities: the <see cref="IStepSource"/> makes the
/// batch, the teacher (when the objective needs its probabilities and the source did not compute
/// its logits) labels it at T, and the <see cref="StudentTrainer"/> takes a step with the method's
/// <see cref="StudentObjective"/>. Both paths compute the same numbers.
/// </summary>
public class SourceTrainer : IStepTrainer
{
    private readonly IStepSource source;
    private readonly StudentTrainer student;
    private readonly Classifier? teacher;

    public SourceTrainer(string phase, IStepSource source, Classifier model, TrainSpec train, long totalSteps, StudentObjective objective, Classifier? teacher)
    {
        if (objective.SoftLabelTemperature is not null && teacher is null) throw new ArgumentException($"{objective.GetType().Name} needs a teacher");
        Phase = phase;
        this.source = source;
        this.teacher = teacher;
        if (teacher is not null) Freeze(teacher);
        TotalSteps = totalSteps;
        student = new StudentTrainer(model, train, totalSteps, objective);
    }

    public string Phase { get; }
    public long Step => student.Step;
    public long TotalSteps { get; }
    public Classifier Model => student.Model;

    public IReadOnlyDictionary<string, double>? TrainStep(bool wantMetrics)
    {
        // whatever a source or the soft labels leave unscoped is freed with the step, not by the
        // finalizer (TensorLeakTests checks every method's step)
        using var scope = NewDisposeScope();
        using var batch = source.Next(wantMetrics);
        var temperature = student.Objective.SoftLabelTemperature;
        using var soft = temperature is not { } t ? null
            : batch.TeacherLogits is { } logits ? SoftLabels.FromLogits(logits, t)
            : SoftLabels.Label(teacher!, batch.Images, t);
        var loss = student.TrainStep(new StudentBatch(batch.Images, batch.Labels, soft, temperature ?? 1), wantMetrics);
        if (loss is not { } l) return null;
        var metrics = batch.Metrics is { } m ? new Dictionary<string, double>(m) : [];
        metrics[student.Objective.LossName] = l;
        metrics[student.Objective.LrName] = student.Lr;
        if (student.LastBatchAccuracy is { } a) metrics["batch_accuracy"] = a;
        return metrics;
    }

    /// <summary>Eval mode and no parameter gradients: a teacher is read, never trained, by the other methods.</summary>
    public static void Freeze(Classifier teacher)
    {
        teacher.eval();
        foreach (var p in teacher.parameters()) p.requires_grad = false;
    }

    public Tensor? Samples(int count) => source.Samples(count);

    public double LrScale => student.LrScale;

    public void ScaleLearningRates(double factor)
    {
        source.ScaleLearningRates(factor);
        student.ScaleLearningRates(factor);
    }

    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "source-trainer/" + Phase);
        student.SaveState(w);
        source.SaveState(w);
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, "source-trainer/" + Phase);
        student.LoadState(r);
        source.LoadState(r);
    }

    public void Dispose()
    {
        source.Dispose();
        student.Dispose();
    }
}

/// <summary>
/// Every method that learns from real labelled batches (supervised training, LSR, Hinton KD with
/// Re-KD and De-KD, Tf-KD self and reg), and the teachers and baselines: a <see cref="SourceTrainer"/>
/// over the training set (<see cref="RealDataSource"/>).
/// </summary>
public sealed class RealDataTrainer(string phase, Classifier model, DataSplits data, TrainSpec train, Augmentation? augmentation, StudentObjective objective, Device device, long seed, Classifier? teacher = null)
    : SourceTrainer(phase, new RealDataSource(data, train.BatchSize, device, seed, augmentation), model, train, TotalStepsOf(train, data.TrainX.shape[0] / train.BatchSize), objective, teacher)
{
    /// <summary>Steps of a training spec over a training set of this many batches per epoch.</summary>
    public static long TotalStepsOf(TrainSpec train, long stepsPerEpoch) => train.Steps > 0 ? train.Steps : train.Epochs * stepsPerEpoch;
}
