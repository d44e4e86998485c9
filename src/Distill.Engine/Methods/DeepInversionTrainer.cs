using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Pipeline;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>
/// DeepInversion and Adaptive DeepInversion in one loop, made of the same parts the actor pipeline
/// spreads over a generator and student entities: a <see cref="RoundSynthesizer"/> synthesises a
/// round (against the live student for ADI), the round joins the <see cref="SyntheticPool"/> with
/// the teacher's probabilities at T, and the student (<see cref="StudentTrainer"/>, KD at T)
/// trains on pool batches drawn per step. Each pixel iteration and each student step is one step.
/// </summary>
public sealed class DeepInversionTrainer : IStepTrainer
{
    private readonly DeepInversionSpec spec;
    private readonly Device device;
    private readonly long seed;
    private readonly bool adaptive;
    private readonly RoundSynthesizer rounds;
    private readonly SyntheticPool pool = new();
    private readonly StudentTrainer student;

    public DeepInversionTrainer(Classifier teacher, Classifier student, DeepInversionSpec spec, TrainSpec studentTrain,
        double[] mean, double[] std, Device device, long seed, bool adaptive)
    {
        this.spec = spec;
        this.device = device;
        this.seed = seed;
        this.adaptive = adaptive;
        Model = student;
        rounds = new RoundSynthesizer(teacher, adaptive ? spec : spec with { CompetitionWeight = 0 }, mean, std, device, seed);
        this.student = new StudentTrainer(student, studentTrain, StudentTotal(spec), new StudentObjective.SoftTarget(spec.StudentTemperature));
        TotalSteps = (long)spec.Rounds * (spec.Iterations + spec.StudentSteps);
    }

    /// <summary>Student steps over the whole run (the pipeline's student counts only these).</summary>
    public static long StudentTotal(DeepInversionSpec spec) => (long)spec.Rounds * spec.StudentSteps;

    public string Phase => adaptive ? "adi" : "deepinversion";
    public long Step { get; private set; }
    public long TotalSteps { get; }
    public Classifier Model { get; }
    public int PoolImages => (int)pool.Count;
    public long StudentSteps => student.Step;

    private long PerRound => spec.Iterations + spec.StudentSteps;

    public IReadOnlyDictionary<string, double>? TrainStep(bool wantMetrics)
    {
        if (Step % PerRound < spec.Iterations)
        {
            if (!rounds.InRound) rounds.Begin(adaptive ? Model : null);
            var (m, done) = rounds.Iterate(wantMetrics);
            Step++;
            if (done is not null)
                using (done) pool.Add(done.Round, done.Images, done.Probs);
            if (m is not null) { m["pool"] = PoolImages; m["synth_step"] = 1; }
            return m;
        }
        var seq = student.Step + 1;
        var (x, p) = pool.Sample(seed, seq, spec.StudentBatch, device, pool.Rounds);
        double? loss;
        using (x) using (p) loss = student.TrainStep(x, p, spec.StudentTemperature, wantMetrics);
        Step++;
        if (loss is not { } l) return null;
        return new Dictionary<string, double> { ["loss_kd"] = l, ["pool"] = PoolImages, ["lr_s"] = student.Lr };
    }

    public Tensor? Samples(int count)
    {
        if (pool.Images is not { } all) return null;
        // the newest batch
        var start = Math.Max(0, all.shape[0] - spec.BatchSize);
        return all[(int)start..(int)Math.Min(all.shape[0], start + count)].clone();
    }

    public void ScaleLearningRates(double factor) => student.ScaleLearningRates(factor);
    public double LrScale => student.LrScale;

    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, Phase + "-2");
        w.Write(Step);
        student.SaveState(w);
        rounds.SaveState(w);
        pool.SaveState(w);
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, Phase + "-2");
        var step = r.ReadInt64();
        student.LoadState(r);
        rounds.LoadState(r, adaptive ? Model : null);
        pool.LoadState(r);
        Step = step;
    }

    public void Dispose()
    {
        rounds.Dispose();
        pool.Dispose();
        student.Dispose();
    }
}
