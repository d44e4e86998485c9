using Distill.Engine.Losses;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Distill.Engine.Methods;

/// <summary>
/// DeepInversion / ADI pixel optimisation for one batch (SPEC.md §4): Adam on the pixels, random
/// jitter (roll) and horizontal flip each iteration, cosine learning rate, pixels clipped to the
/// valid range, and the lowest-loss batch kept. Iterate with <see cref="Iterate"/>; read
/// <see cref="Best"/> when done.
/// </summary>
public sealed class ImageSynthesizer : IDisposable
{
    private readonly Classifier teacher;
    private readonly Classifier? student;
    private readonly BatchNormStatistics bnStats;
    private readonly DeepInversionSpec spec;
    private readonly TorchSharp.Modules.Parameter pixels;
    private readonly Tensor targets, lower, upper;
    private readonly TorchSharp.Modules.Adam adam;
    private readonly Generator rng;
    private readonly TotalVariation tv;
    private readonly CompetitionForm competition;
    private Tensor? best;

    public ImageSynthesizer(Classifier teacher, BatchNormStatistics bnStats, Classifier? student, DeepInversionSpec spec,
        Tensor targets, double[] mean, double[] std, Device device, Generator rng)
    {
        this.teacher = teacher;
        this.student = student;
        this.bnStats = bnStats;
        this.spec = spec;
        this.rng = rng;
        var info = teacher.Info;
        this.targets = targets.to(device);
        // Drawn from the CPU generator (its state is what checkpoints keep), then moved: the same start on every device.
        using (var start = randn([targets.shape[0], info.Channels, info.ImageSize, info.ImageSize], generator: rng))
            pixels = new TorchSharp.Modules.Parameter(start.to(device), requires_grad: true);
        (lower, upper) = PixelRange.Normalised(mean, std).Bounds(device);
        adam = optim.Adam([pixels], spec.Lr, beta1: 0.5, beta2: 0.9, eps: 1e-8);
        tv = spec.Tv == "code" ? TotalVariation.Code : TotalVariation.Paper;
        competition = spec.Competition == "code" ? CompetitionForm.Code : CompetitionForm.Paper;
    }

    public int Iteration { get; private set; }
    public double BestLoss { get; private set; } = double.PositiveInfinity;
    public Tensor Targets => targets;
    public Tensor Best => best ?? pixels.detach();

    /// <summary>Total objective for a (jittered) batch: CE + a_f R_feature + a_tv TV + a_l2 ||x|| + a_c R_compete.</summary>
    public static (Tensor Total, Dictionary<string, Tensor> Parts) Objective(Classifier teacher, BatchNormStatistics bnStats, Classifier? student,
        Tensor x, Tensor targets, DeepInversionSpec spec, TotalVariation tv, CompetitionForm competition)
    {
        bnStats.Clear();
        var logits = teacher.call(x);
        var ce = F.cross_entropy(logits, targets);
        var feature = DeepInversion.FeatureRegulariser(bnStats.Observed, spec.FirstBnWeight);
        var tvLoss = DeepInversion.TotalVariationLoss(x, tv);
        var l2 = DeepInversion.L2(x);
        var total = ce + feature * spec.FeatureWeight + tvLoss * spec.TvWeight + l2 * spec.L2Weight;
        var parts = new Dictionary<string, Tensor> { ["ce"] = ce, ["r_feature"] = feature, ["r_tv"] = tvLoss, ["r_l2"] = l2 };
        if (student is not null && spec.CompetitionWeight > 0)
        {
            var compete = DeepInversion.Competition(logits, student.call(x), competition);
            total = total + compete * spec.CompetitionWeight;
            parts["r_compete"] = compete;
        }
        bnStats.Clear();
        return (total, parts);
    }

    public Dictionary<string, double>? Iterate(bool wantMetrics)
    {
        using var scope = NewDisposeScope();
        var lr = 0.5 * spec.Lr * (1 + Math.Cos(Math.PI * Iteration / spec.Iterations));
        foreach (var g in adam.ParamGroups) g.LearningRate = lr;
        var x = (Tensor)pixels;
        if (spec.Jitter > 0)
        {
            var shifts = randint(-spec.Jitter, spec.Jitter + 1, [2], generator: rng);
            x = x.roll([shifts[0].item<long>(), shifts[1].item<long>()], [2, 3]);
        }
        if (spec.Flip && rand([1], generator: rng).item<float>() < 0.5) x = x.flip(3);
        adam.zero_grad();
        var (total, parts) = Objective(teacher, bnStats, student, x, targets, spec, tv, competition);
        total.backward();
        adam.step();
        using (no_grad()) pixels.copy_(pixels.maximum(lower).minimum(upper));
        var value = total.item<float>();
        // keep the best batch seen (the official code compares the loss of the step just taken)
        if (value < BestLoss)
        {
            BestLoss = value;
            best?.Dispose();
            best = pixels.detach().clone().DetachFromDisposeScope();
        }
        Iteration++;
        if (!wantMetrics) return null;
        var m = parts.ToDictionary(kv => kv.Key, kv => (double)kv.Value.item<float>());
        m["loss"] = value;
        m["lr_x"] = lr;
        return m;
    }

    /// <summary>The batch in progress (pixels, Adam moments, best so far, iteration, targets): resumes bit for bit.</summary>
    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "pixel-batch");
        w.Write(Iteration);
        w.Write(BestLoss);
        StateIo.WriteTensor(w, targets);
        StateIo.WriteTensor(w, pixels);
        w.Write(best is not null);
        if (best is not null) StateIo.WriteTensor(w, best);
        using var ms = new MemoryStream();
        using (var inner = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) adam.save_state_dict(inner);
        StateIo.WriteBytes(w, ms.ToArray());
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, "pixel-batch");
        var iteration = r.ReadInt32();
        var bestLoss = r.ReadDouble();
        using (var t = StateIo.ReadTensor(r))
        {
            if (!t.shape.SequenceEqual(targets.shape)) throw new InvalidDataException($"checkpoint holds {t.shape[0]} targets for a batch of {targets.shape[0]}");
            targets.copy_(t);
        }
        using (var p = StateIo.ReadTensor(r))
        {
            if (!p.shape.SequenceEqual(pixels.shape))
                throw new InvalidDataException($"checkpoint pixels [{string.Join(", ", p.shape)}] do not fit a batch of [{string.Join(", ", pixels.shape)}]");
            using (no_grad()) pixels.copy_(p);
        }
        best?.Dispose();
        best = null;
        if (r.ReadBoolean())
        {
            using var b = StateIo.ReadTensor(r);
            best = b.to(pixels.device).clone().DetachFromDisposeScope();
        }
        using (var inner = new BinaryReader(new MemoryStream(StateIo.ReadBytes(r)))) adam.load_state_dict(inner);
        Iteration = iteration;
        BestLoss = bestLoss;
    }

    public void Dispose()
    {
        best?.Dispose();
        adam.Dispose();
        pixels.Dispose();
        lower.Dispose();
        upper.Dispose();
        targets.Dispose();
    }
}
