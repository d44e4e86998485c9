using Distill.Engine.Models;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;

namespace Distill.Engine.Methods;

/// <summary>The `deepinversion:` section, read by deepinversion and adi (which differ in its defaults).</summary>
public sealed record DeepInversionSpec
{
    [SpecKey("synthesis rounds (one batch each)", Min = 1, Max = 1_000_000)]
    public int Rounds { get; init; } = 10;
    [SpecKey("images per synthesised batch", Min = 1, Max = 1 << 16)]
    public int BatchSize { get; init; } = 256;
    [SpecKey("pixel optimisation steps per batch", Min = 1, Max = 1_000_000)]
    public int Iterations { get; init; } = 2000;
    [SpecKey("Adam learning rate of the pixels (cosine schedule)", Min = 0, Max = 100, MinExclusive = true)]
    public double Lr { get; init; } = 0.1;
    [SpecKey("a_tv, weight of the total-variation prior", Min = 0, Max = 1e6)]
    public double TvWeight { get; init; } = 1e-4;
    [SpecKey("a_l2, weight of the l2 prior", Min = 0, Max = 1e6)]
    public double L2Weight { get; init; } = 1e-5;
    [SpecKey("a_f, weight of R_feature (BatchNorm statistics)", Min = 0, Max = 1e6)]
    public double FeatureWeight { get; init; } = 10;
    [SpecKey("extra weight of the first BatchNorm layer's term", Min = 0, Max = 1e6)]
    public double FirstBnWeight { get; init; } = 10;
    [SpecKey("weight of ADI's competition term 1 - JS(p_T, p_S) (adi only; 0 for deepinversion)", Min = 0, Max = 1e6)]
    public double CompetitionWeight { get; init; }
    [SpecKey("total variation: paper (per-pixel gradient norm) or code (norms of the four shifted differences)", Choices = ["paper", "code"])]
    public string Tv { get; init; } = "paper";
    [SpecKey("competition term: paper or code form", Choices = ["paper", "code"])]
    public string Competition { get; init; } = "paper";
    [SpecKey("largest random roll of the pixels, in pixels", Min = 0, Max = 64)]
    public int Jitter { get; init; } = 2;
    [SpecKey("random horizontal flips")]
    public bool Flip { get; init; } = true;
    [SpecKey("student KD steps after each round", Min = 0)]
    public int StudentSteps { get; init; } = 200;
    [SpecKey("images per student step, drawn from the pool", Min = 1, Max = 1 << 16)]
    public int StudentBatch { get; init; } = 256;
    [SpecKey("temperature of the teacher's labels and the student's KD", Min = 0, Max = 1000, MinExclusive = true)]
    public double StudentTemperature { get; init; } = 3;
    [SpecKey("images in the PNG drawn at each evaluation", Min = 0, Max = 1024)]
    public int SampleGrid { get; init; } = 64;
}

/// <summary>
/// `method: deepinversion`: batches of pixels optimised against the teacher's BatchNorm
/// statistics, round after round, into a pool the student learns from with KD at T.
/// </summary>
public class DeepInversionMethod : MethodDefinition
{
    public override string Name => "deepinversion";
    public override string Summary => "data-free: pixels optimised against the teacher's BatchNorm statistics (CE + priors + a_f R_feature), pooled; KD at T";
    public override string Reference => "SPEC.md §4";
    public override string SectionName => "deepinversion";
    public override object SectionDefaults => new DeepInversionSpec();
    public override TeacherUse Teacher => TeacherUse.Required;
    public override bool StudentSeesData => false;
    public override bool SourceUsesTeacher => true;

    /// <summary>Whether rounds compete with the student (ADI).</summary>
    protected virtual bool Adaptive => false;

    public override IEnumerable<(string Key, string Reason)> Problems(RunSpec spec)
    {
        if (spec.Teacher is { } t && !ModelFactory.HasBatchNorm(t.Arch))
            yield return ("teacher.arch", $"DeepInversion needs a teacher with BatchNorm layers ({string.Join(", ", ModelFactory.Architectures.Where(ModelFactory.HasBatchNorm))}), not '{t.Arch}'");
        var weight = spec.SettingsOf<DeepInversionSpec>().CompetitionWeight;
        if (!Adaptive && weight != 0) yield return ("deepinversion.competition_weight", "the competition term is ADI's: use method 'adi'");
        if (Adaptive && weight <= 0) yield return ("deepinversion.competition_weight", "adi needs a competition weight > 0");
    }

    public override IStepTrainer CreateTrainer(MethodContext c) =>
        new DeepInversionTrainer(c.Teacher!, c.Student, c.Spec.SettingsOf<DeepInversionSpec>(), c.Spec.Student.Train,
            c.Data.Mean, c.Data.Std, c.Device, c.Spec.Seed, Adaptive);

    /// <summary>After each round's student steps, as the pipeline's student evaluates.</summary>
    public override int EvalEvery(RunSpec spec) => spec.SettingsOf<DeepInversionSpec>() is var d ? d.Iterations + d.StudentSteps : 0;
    public override int SampleGrid(RunSpec spec) => spec.SettingsOf<DeepInversionSpec>().SampleGrid;
    public override long SynthesisedImages(RunSpec spec, long studentSteps) => spec.SettingsOf<DeepInversionSpec>() is var d ? (long)d.Rounds * d.BatchSize : 0;
    public override StudentObjective Objective(RunSpec spec) => new StudentObjective.SoftTarget(spec.SettingsOf<DeepInversionSpec>().StudentTemperature);
    public override long PipelineStudentSteps(RunSpec spec, long trainImages) => DeepInversionTrainer.StudentTotal(spec.SettingsOf<DeepInversionSpec>());
    public override int PipelineEvalEvery(RunSpec spec) => spec.SettingsOf<DeepInversionSpec>().StudentSteps;

    /// <summary>Rounds, each followed by its student steps on batches drawn from every round so far.</summary>
    public override BatchPlan Plan(RunSpec spec, long trainImages) => spec.SettingsOf<DeepInversionSpec>() is var d
        ? BatchPlan.PooledRounds(d.Rounds, d.StudentSteps, d.Iterations, d.StudentBatch, Adaptive) : throw new InvalidOperationException();

    /// <summary>Rounds of pixel optimisation; ADI's compete with the student, the initial one for round 1.</summary>
    public override IBatchSource CreateBatchSource(SourceContext c)
    {
        var d = c.Spec.SettingsOf<DeepInversionSpec>();
        var teacher = c.Teacher ?? throw new InvalidOperationException($"method '{Name}': rounds of synthesis need the teacher");
        var rounds = new RoundSynthesizer(teacher, Adaptive ? d : d with { CompetitionWeight = 0 }, c.Data.Mean, c.Data.Std, c.Device, c.Spec.Seed);
        return new RoundSource(rounds, Adaptive ? (c.NewStudent ?? throw new InvalidOperationException("adi's rounds need the initial student"))() : null);
    }
}
