using Distill.Engine.Losses;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>
/// DAFL (SPEC.md §3): each step draws z, generates a batch, updates the generator with
/// L_oh + alpha L_a + beta L_ie through the frozen teacher, and updates the student with the soft
/// cross-entropy to the teacher on the same (detached) batch, as the official loop does.
/// </summary>
public sealed class DaflTrainer : IStepTrainer
{
    private readonly Classifier teacher;
    private readonly DaflGenerator generator;
    private readonly ScheduledOptimizer optG, optS;
    private readonly DaflSpec spec;
    private readonly Device device;
    private readonly Generator rng;
    private readonly OneHotLoss oneHot;
    private readonly ActivationNorm activation;
    private readonly EntropyForm entropy;

    public DaflTrainer(Classifier teacher, Classifier student, DaflSpec spec, TrainSpec studentTrain, Device device, long seed)
    {
        this.teacher = teacher;
        this.spec = spec;
        this.device = device;
        Model = student;
        RealDataTrainer.Freeze(teacher);
        generator = new DaflGenerator(spec.LatentDim, teacher.Info.ImageSize, teacher.Info.Channels, spec.GeneratorWidth);
        generator.to(device);
        TotalSteps = spec.Steps;
        optG = ScheduledOptimizer.Create(generator.parameters(), new TrainSpec { Optimizer = "adam", Lr = spec.GeneratorLr }, TotalSteps);
        optS = ScheduledOptimizer.Create(student.parameters(), studentTrain, TotalSteps);
        rng = new Generator((ulong)seed, device);
        oneHot = spec.OneHot == "l1" ? OneHotLoss.L1 : OneHotLoss.CrossEntropy;
        activation = spec.Activation == "code" ? ActivationNorm.Code : ActivationNorm.Paper;
        entropy = spec.Entropy switch { "code" => EntropyForm.Code, "per-sample" => EntropyForm.PerSample, _ => EntropyForm.Paper };
    }

    public string Phase => "dafl";
    public long Step { get; private set; }
    public long TotalSteps { get; }
    public Classifier Model { get; }
    public DaflGenerator Generator => generator;

    public IReadOnlyDictionary<string, double>? TrainStep(bool wantMetrics)
    {
        using var scope = NewDisposeScope();
        generator.train();
        Model.train();
        var z = randn([spec.BatchSize, spec.LatentDim], generator: rng, device: device);
        optG.ZeroGrad();
        optS.ZeroGrad();
        var images = generator.call(z);
        var (tLogits, tFeatures) = teacher.ForwardWithFeatures(images);
        var lOh = Dafl.OneHot(tLogits, oneHot);
        var lA = Dafl.Activation(tFeatures, activation);
        var lIe = Dafl.InformationEntropy(tLogits, entropy);
        var lG = lOh * spec.OneHotWeight + lA * spec.Alpha + lIe * spec.Beta;
        var sLogits = Model.call(images.detach());
        var lKd = Distillation.SoftCrossEntropy(sLogits, tLogits.detach());
        (lG + lKd).backward();
        optG.Step(Step);
        optS.Step(Step);
        Step++;
        if (!wantMetrics) return null;
        var labels = tLogits.argmax(1);
        var distinct = bincount(labels, minlength: tLogits.shape[1]).gt(0).sum().item<long>();
        // student loss less the teacher's entropy = KL(p_T || p_S): 0 exactly when they agree
        var pT = nn.functional.softmax(tLogits.detach(), 1);
        var teacherEntropy = -(pT.xlogy(pT)).sum().item<float>() / spec.BatchSize;
        return new Dictionary<string, double>
        {
            ["loss_g"] = lG.item<float>(),
            ["loss_oh"] = lOh.item<float>(),
            ["loss_a"] = lA.item<float>(),
            ["loss_ie"] = lIe.item<float>(),
            ["loss_kd"] = lKd.item<float>(),
            ["kl_kd"] = lKd.item<float>() - teacherEntropy,
            ["classes"] = distinct,
            ["gen_std"] = images.detach().std().item<float>(),
            ["lr_s"] = optS.LrAt(Step - 1),
            ["lr_g"] = optG.LrAt(Step - 1),
        };
    }

    public Tensor? Samples(int count)
    {
        using var _ = no_grad();
        generator.eval();
        using var g = new Generator(12345, device);   // a fixed z: grids over time show the same points
        var z = randn([count, spec.LatentDim], generator: g, device: device);
        var x = generator.call(z);
        generator.train();
        return x;
    }

    public void ScaleLearningRates(double factor)
    {
        optG.Scale *= factor;
        optS.Scale *= factor;
    }

    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "dafl");
        w.Write(Step);
        StateIo.WriteModule(w, generator);
        StateIo.WriteModule(w, Model);
        optG.Save(w);
        optS.Save(w);
        StateIo.WriteGenerator(w, rng);
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, "dafl");
        Step = r.ReadInt64();
        StateIo.ReadModule(r, generator);
        StateIo.ReadModule(r, Model);
        optG.Load(r);
        optS.Load(r);
        StateIo.ReadGenerator(r, rng);
    }

    public void Dispose()
    {
        optG.Dispose();
        optS.Dispose();
        generator.Dispose();
        rng.Dispose();
    }
}
