using Distill.Engine.Losses;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>
/// DeepInversion and Adaptive DeepInversion as rounds: synthesise one class-balanced batch
/// (<see cref="ImageSynthesizer"/>, against the live student for ADI), add the lowest-loss batch
/// to the pool, then train the student with KD (temperature T) on random batches of the whole
/// pool, labelled by the teacher. Each pixel iteration and each student step is one step.
/// </summary>
public sealed class DeepInversionTrainer : IStepTrainer
{
    private readonly Classifier teacher;
    private readonly DeepInversionSpec spec;
    private readonly Device device;
    private readonly Generator rng;
    private readonly BatchNormStatistics bnStats;
    private readonly ScheduledOptimizer optS;
    private readonly double[] mean, std;
    private readonly bool adaptive;
    private readonly Generator poolRng;                // CPU: targets and pool sampling
    private Tensor? pool;                              // every kept batch, [images, C, H, W], on the CPU
    private ImageSynthesizer? synth;
    private long roundStart;

    public DeepInversionTrainer(Classifier teacher, Classifier student, DeepInversionSpec spec, TrainSpec studentTrain,
        double[] mean, double[] std, Device device, long seed, bool adaptive)
    {
        this.teacher = teacher;
        this.spec = spec;
        this.device = device;
        this.mean = mean;
        this.std = std;
        this.adaptive = adaptive;
        Model = student;
        RealDataTrainer.Freeze(teacher);
        bnStats = new BatchNormStatistics(teacher) { Enabled = false };
        rng = new Generator((ulong)seed, device);
        poolRng = new Generator((ulong)seed + 1);
        TotalSteps = (long)spec.Rounds * (spec.Iterations + spec.StudentSteps);
        optS = ScheduledOptimizer.Create(student.parameters(), studentTrain, (long)spec.Rounds * spec.StudentSteps);
    }

    public string Phase => adaptive ? "adi" : "deepinversion";
    public long Step { get; private set; }
    public long TotalSteps { get; }
    public Classifier Model { get; }
    public int PoolImages => pool is null ? 0 : (int)pool.shape[0];
    public long StudentSteps { get; private set; }

    private long PerRound => spec.Iterations + spec.StudentSteps;

    public IReadOnlyDictionary<string, double>? TrainStep(bool wantMetrics)
    {
        var inRound = Step % PerRound;
        if (inRound < spec.Iterations)
        {
            if (synth is null)
            {
                roundStart = Step;
                Model.eval();   // ADI competes with the student as it is; BN running stats must not move
                synth = new ImageSynthesizer(teacher, bnStats, adaptive ? Model : null, spec, BalancedTargets(), mean, std, device, rng);
            }
            bnStats.Enabled = true;
            var m = synth.Iterate(wantMetrics);
            bnStats.Enabled = false;
            Step++;
            if (synth.Iteration == spec.Iterations)
            {
                var kept = synth.Best.detach().cpu();
                var grown = pool is null ? kept.clone() : cat([pool, kept], 0);
                pool?.Dispose();
                pool = grown.DetachFromDisposeScope();
                synth.Dispose();
                synth = null;
            }
            if (m is not null) { m["pool"] = PoolImages; m["synth_step"] = 1; }
            return m;
        }
        return StudentStep(wantMetrics);
    }

    private Tensor BalancedTargets()
    {
        var k = teacher.Info.Classes;
        using var ordered = arange(spec.BatchSize, int64) % k;
        using var perm = randperm(spec.BatchSize, generator: poolRng);
        return ordered.index_select(0, perm);
    }

    private Dictionary<string, double>? StudentStep(bool wantMetrics)
    {
        using var scope = NewDisposeScope();
        Model.train();
        var idx = randint(0, pool!.shape[0], [spec.StudentBatch], generator: poolRng);
        var x = pool.index_select(0, idx).to(device);
        Tensor tLogits;
        using (no_grad()) tLogits = teacher.call(x);
        optS.ZeroGrad();
        var loss = Distillation.Hinton(Model.call(x), tLogits, null, spec.StudentTemperature, 0);
        loss.backward();
        optS.Step(StudentSteps);
        StudentSteps++;
        Step++;
        if (!wantMetrics) return null;
        return new Dictionary<string, double> { ["loss_kd"] = loss.item<float>(), ["pool"] = PoolImages, ["lr_s"] = optS.LrAt(StudentSteps - 1) };
    }

    public Tensor? Samples(int count)
    {
        if (pool is null) return null;
        // the newest batch
        var start = Math.Max(0, pool.shape[0] - spec.BatchSize);
        return pool[(int)start..(int)Math.Min(pool.shape[0], start + count)].clone();
    }

    public void ScaleLearningRates(double factor) => optS.Scale *= factor;

    /// <summary>A checkpoint taken mid-synthesis resumes at the start of that batch's synthesis.</summary>
    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, Phase);
        w.Write(synth is null ? Step : roundStart);
        w.Write(StudentSteps);
        StateIo.WriteModule(w, Model);
        optS.Save(w);
        StateIo.WriteGenerator(w, rng);
        StateIo.WriteGenerator(w, poolRng);
        w.Write(pool is not null);
        if (pool is not null) StateIo.WriteTensor(w, pool);
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, Phase);
        Step = r.ReadInt64();
        StudentSteps = r.ReadInt64();
        StateIo.ReadModule(r, Model);
        optS.Load(r);
        StateIo.ReadGenerator(r, rng);
        StateIo.ReadGenerator(r, poolRng);
        pool?.Dispose();
        pool = r.ReadBoolean() ? StateIo.ReadTensor(r).DetachFromDisposeScope() : null;
        synth?.Dispose();
        synth = null;
    }

    public void Dispose()
    {
        synth?.Dispose();
        pool?.Dispose();
        bnStats.Dispose();
        poolRng.Dispose();
        optS.Dispose();
        rng.Dispose();
    }
}
