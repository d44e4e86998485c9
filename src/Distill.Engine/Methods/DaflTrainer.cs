using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Pipeline;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>
/// DAFL (SPEC.md §3) in one loop: each step the <see cref="DaflSynthesizer"/> generates a batch and
/// updates the generator through the frozen teacher, then the <see cref="StudentTrainer"/> learns
/// the teacher's probabilities on the same (detached) batch, as the official loop does. The actor
/// pipeline runs the same two parts in separate actors, so both paths compute the same numbers.
/// </summary>
public sealed class DaflTrainer : IStepTrainer
{
    private readonly DaflSynthesizer synthesizer;
    private readonly StudentTrainer student;
    private readonly DaflSpec spec;

    public DaflTrainer(Classifier teacher, Classifier student, DaflSpec spec, TrainSpec studentTrain, Device device, long seed, PixelRange? range = null)
    {
        this.spec = spec;
        synthesizer = new DaflSynthesizer(teacher, spec, device, seed, range);
        this.student = new StudentTrainer(student, studentTrain, spec.Steps);
    }

    public string Phase => "dafl";
    public long Step => student.Step;
    public long TotalSteps => spec.Steps;
    public Classifier Model => student.Model;
    public DaflGenerator Generator => synthesizer.Generator;

    public IReadOnlyDictionary<string, double>? TrainStep(bool wantMetrics)
    {
        // the metrics' temporaries are freed with the step, not left to the finalizer
        using var scope = NewDisposeScope();
        using var batch = synthesizer.Next(wantMetrics);
        using var probs = SoftLabels.FromLogits(batch.TeacherLogits!, 1);
        var loss = student.TrainStep(batch.Images, probs, 1, wantMetrics);
        if (!wantMetrics) return null;
        var metrics = new Dictionary<string, double>(batch.Metrics!);
        // student loss less the teacher's entropy = KL(p_T || p_S): 0 exactly when they agree
        var teacherEntropy = -(probs.xlogy(probs)).sum().item<float>() / spec.BatchSize;
        metrics["loss_kd"] = loss!.Value;
        metrics["kl_kd"] = loss.Value - teacherEntropy;
        metrics["lr_s"] = student.Lr;
        return metrics;
    }

    public Tensor? Samples(int count) => synthesizer.Samples(count);

    public double LrScale => student.LrScale;

    public void ScaleLearningRates(double factor)
    {
        synthesizer.ScaleLearningRates(factor);
        student.ScaleLearningRates(factor);
    }

    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "dafl");
        synthesizer.SaveState(w);
        student.SaveState(w);
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, "dafl");
        synthesizer.LoadState(r);
        student.LoadState(r);
    }

    public void Dispose()
    {
        synthesizer.Dispose();
        student.Dispose();
    }
}
