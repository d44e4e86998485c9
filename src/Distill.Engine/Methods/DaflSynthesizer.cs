using Distill.Engine.Losses;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using TorchSharp;
using Distill.Engine.Pipeline;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>
/// The generator half of DAFL (SPEC.md §3): draws z, generates a batch and updates the generator
/// with L_oh + alpha L_a + beta L_ie through the frozen teacher. It does not need the student, so a
/// generator actor can run it ahead of the students that consume its batches.
/// </summary>
public sealed class DaflSynthesizer : IStepSource
{
    private readonly Classifier teacher;
    private readonly DaflGenerator generator;
    private readonly ScheduledOptimizer opt;
    private readonly DaflSpec spec;
    private readonly Device device;
    private readonly Generator rng;
    private readonly OneHotLoss oneHot;
    private readonly ActivationNorm activation;
    private readonly EntropyForm entropy;
    /// <summary>spec.clamp_to_pixel_range: the bounds generated images are clamped to; null = as coded.</summary>
    private readonly (Tensor Low, Tensor High)? clamp;

    /// <param name="range">the dataset's normalised pixel range; required when spec.ClampToPixelRange</param>
    public DaflSynthesizer(Classifier teacher, DaflSpec spec, Device device, long seed, PixelRange? range = null)
    {
        if (spec.ClampToPixelRange)
        {
            if (range is null) throw new ArgumentException("dafl.clamp_to_pixel_range needs the dataset's pixel range");
            if (range.Low.Length != teacher.Info.Channels)
                throw new ArgumentException($"pixel range has {range.Low.Length} channels, the teacher takes {teacher.Info.Channels}");
            var (lo, hi) = range.Bounds(device);
            clamp = (lo.DetachFromDisposeScope(), hi.DetachFromDisposeScope());
        }
        this.teacher = teacher;
        this.spec = spec;
        this.device = device;
        SourceTrainer.Freeze(teacher);
        // the generator's initial weights depend on the seed alone, not on what was created before
        // it, so that a generator actor and the one-loop trainer start from the same weights
        manual_seed(seed + 7919);
        generator = new DaflGenerator(spec.LatentDim, teacher.Info.ImageSize, teacher.Info.Channels, spec.GeneratorWidth);
        generator.to(device);
        opt = ScheduledOptimizer.Create(generator.parameters(), new TrainSpec { Optimizer = "adam", Lr = spec.GeneratorLr }, spec.Steps);
        rng = new Generator((ulong)seed); // a CPU generator on every device: TorchSharp makes no other
        oneHot = spec.OneHot == "l1" ? OneHotLoss.L1 : OneHotLoss.CrossEntropy;
        activation = spec.Activation == "code" ? ActivationNorm.Code : ActivationNorm.Paper;
        entropy = spec.Entropy switch { "code" => EntropyForm.Code, "per-sample" => EntropyForm.PerSample, _ => EntropyForm.Paper };
    }

    public long Step { get; private set; }
    public DaflGenerator Generator => generator;
    public double Lr => opt.LrAt(Math.Max(0, Step - 1));

    /// <summary>One generator update: the batch (detached) and the teacher's logits on it. The returned tensors belong to the caller (outside any dispose scope).</summary>
    public SourceBatch Next(bool wantMetrics)
    {
        using var scope = NewDisposeScope();
        generator.train();
        // Drawn on the CPU from the persisted CPU generator, then moved: the same latents on every device.
        var z = randn([spec.BatchSize, spec.LatentDim], generator: rng).to(device);
        opt.ZeroGrad();
        var images = Clamp(generator.call(z));
        var (tLogits, tFeatures) = teacher.ForwardWithFeatures(images);
        var lOh = Dafl.OneHot(tLogits, oneHot);
        var lA = Dafl.Activation(tFeatures, activation);
        var lIe = Dafl.InformationEntropy(tLogits, entropy);
        var lG = lOh * spec.OneHotWeight + lA * spec.Alpha + lIe * spec.Beta;
        lG.backward();
        opt.Step(Step);
        Step++;
        Dictionary<string, double>? metrics = null;
        if (wantMetrics)
        {
            var labels = tLogits.argmax(1);
            metrics = new Dictionary<string, double>
            {
                ["loss_g"] = lG.item<float>(),
                ["loss_oh"] = lOh.item<float>(),
                ["loss_a"] = lA.item<float>(),
                ["loss_ie"] = lIe.item<float>(),
                ["classes"] = bincount(labels, minlength: tLogits.shape[1]).gt(0).sum().item<long>(),
                ["gen_std"] = images.detach().std().item<float>(),
                ["lr_g"] = opt.LrAt(Step - 1),
            };
        }
        return new SourceBatch(images.detach().DetachFromDisposeScope(), null, tLogits.detach().DetachFromDisposeScope(), metrics);
    }

    /// <summary>Images from a fixed z, so that grids over time show the same points.</summary>
    public Tensor? Samples(int count)
    {
        using var _ = no_grad();
        generator.eval();
        using var g = new Generator(12345);
        var z = randn([count, spec.LatentDim], generator: g).to(device);
        var x = Clamp(generator.call(z));
        generator.train();
        return x;
    }

    /// <summary>
    /// Without it, BatchNorm's output (mean 0, std 1) is as happy with dark strokes on a grey
    /// background as with MNIST's bright strokes on black, and which one the generator settles on is
    /// chance; in the real pixel range only the second has the contrast the teacher is sure of.
    /// </summary>
    private Tensor Clamp(Tensor images) => clamp is { } c ? maximum(minimum(images, c.High), c.Low) : images;

    public void ScaleLearningRates(double factor) => opt.Scale *= factor;

    public bool CanRollBack => true;

    /// <summary>The generator's weights and Adam moments from the checkpoint; the step (so the schedule) and the latent stream go on from here.</summary>
    public void RollBack(BinaryReader checkpoint, double lrFactor)
    {
        var scale = opt.Scale;
        ReadLearned(checkpoint);
        opt.Scale = scale * lrFactor;
    }

    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "dafl-generator");
        w.Write(Step);
        StateIo.WriteModule(w, generator);
        opt.Save(w);
        StateIo.WriteGenerator(w, rng);
    }

    public void LoadState(BinaryReader r)
    {
        Step = ReadLearned(r);
        StateIo.ReadGenerator(r, rng);
    }

    /// <summary>What SaveState wrote before the latent stream: the step (returned), the weights and the optimiser.</summary>
    private long ReadLearned(BinaryReader r)
    {
        StateIo.Expect(r, "dafl-generator");
        var step = r.ReadInt64();
        StateIo.ReadModule(r, generator);
        opt.Load(r);
        return step;
    }

    public void Dispose()
    {
        opt.Dispose();
        generator.Dispose();
        if (clamp is { } c) { c.Low.Dispose(); c.High.Dispose(); }
        rng.Dispose();
    }
}
