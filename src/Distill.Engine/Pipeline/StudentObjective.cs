using Distill.Engine.Losses;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Distill.Engine.Pipeline;

/// <summary>
/// What a student trains on at one step: images, the data's true labels (when it has them) and
/// the teacher's probabilities at Temperature (when the method uses them).
/// </summary>
public sealed record StudentBatch(Tensor Images, Tensor? Labels, Tensor? SoftLabels, double Temperature) : IDisposable
{
    public void Dispose()
    {
        Images.Dispose();
        Labels?.Dispose();
        SoftLabels?.Dispose();
    }

    /// <summary>Rows [start, start + count) of every tensor (a replica's slice; the caller disposes the views).</summary>
    public StudentBatch Slice(long start, long count) =>
        new(Images.narrow(0, start, count), Labels?.narrow(0, start, count), SoftLabels?.narrow(0, start, count), Temperature);
}

/// <summary>
/// The loss a student minimises, from its logits and a <see cref="StudentBatch"/>. The engine loop
/// and the pipeline's student entity train with the same objective, so they compute the same numbers.
/// </summary>
public abstract record StudentObjective
{
    public abstract Tensor Loss(Tensor logits, StudentBatch batch);

    /// <summary>The temperature of the teacher's probabilities it needs (null: it needs none).</summary>
    public virtual double? SoftLabelTemperature => null;
    /// <summary>Whether it needs the data's true labels.</summary>
    public virtual bool NeedsLabels => true;
    /// <summary>Its metrics.csv columns for the loss and the learning rate.</summary>
    public virtual string LossName => "loss";
    public virtual string LrName => "lr";

    protected static Tensor Labels(StudentBatch b) => b.Labels ?? throw new ArgumentException("this objective needs the data's labels; the batch has none");
    protected static Tensor Soft(StudentBatch b) => b.SoftLabels ?? throw new ArgumentException("this objective needs the teacher's probabilities; the batch has none");

    /// <summary>Cross-entropy on the true labels (supervised training, baselines, teachers).</summary>
    public sealed record CrossEntropy : StudentObjective
    {
        public override Tensor Loss(Tensor logits, StudentBatch b) => F.cross_entropy(logits, Labels(b));
    }

    public sealed record LabelSmoothing(double Epsilon) : StudentObjective
    {
        public override Tensor Loss(Tensor logits, StudentBatch b) => Distillation.LabelSmoothing(logits, Labels(b), Epsilon);
    }

    /// <summary>Hinton KD on real data: the teacher's probabilities at T and the true labels.</summary>
    public sealed record HintonKd(double Temperature, double Alpha) : StudentObjective
    {
        public override double? SoftLabelTemperature => Temperature;
        public override Tensor Loss(Tensor logits, StudentBatch b) => Distillation.HintonFromProbabilities(logits, Soft(b), b.Labels, Temperature, Alpha);
    }

    public sealed record VirtualTeacher(double CorrectProbability, double Temperature, double Alpha, Distillation.VirtualSoftening Softening) : StudentObjective
    {
        public override Tensor Loss(Tensor logits, StudentBatch b) =>
            Distillation.TfKdRegularization(logits, Labels(b), CorrectProbability, Temperature, Alpha, Softening);
    }

    /// <summary>The data-free student's loss: T^2 CE(p_T, softmax(s / T)) on the teacher's probabilities alone.</summary>
    public sealed record SoftTarget(double Temperature) : StudentObjective
    {
        public override double? SoftLabelTemperature => Temperature;
        public override bool NeedsLabels => false;
        public override string LossName => "loss_kd";
        public override string LrName => "lr_s";
        public override Tensor Loss(Tensor logits, StudentBatch b) => Distillation.SoftTargetCrossEntropy(logits, Soft(b), b.Temperature);
    }
}
