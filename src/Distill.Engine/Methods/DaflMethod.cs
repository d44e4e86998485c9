using Distill.Engine.Pipeline;
using Distill.Engine.Specs;

namespace Distill.Engine.Methods;

/// <summary>The `dafl:` section.</summary>
public sealed record DaflSpec : ISpecChecked
{
    [SpecKey("generator steps, each followed by a student step on the same batch", Min = 1)]
    public int Steps { get; init; } = 24_000;
    [SpecKey("images per generated batch", Min = 2, Max = 1 << 16)]
    public int BatchSize { get; init; } = 512;
    [SpecKey("length of the generator's input z", Min = 1, Max = 1 << 16)]
    public int LatentDim { get; init; } = 100;
    [SpecKey("channels of the generator's first convolution (the second has half)", Min = 2, Max = 4096)]
    public int GeneratorWidth { get; init; } = 128;
    [SpecKey("Adam learning rate of the generator", Min = 0, Max = 100, MinExclusive = true)]
    public double GeneratorLr { get; init; } = 0.2;
    [SpecKey("weight of the activation loss L_a", Min = 0, Max = 1e6)]
    public double Alpha { get; init; } = 0.1;
    [SpecKey("weight of the information-entropy loss L_ie", Min = 0, Max = 1e6)]
    public double Beta { get; init; } = 5;
    [SpecKey("weight of the one-hot loss L_oh", Min = 0, Max = 1e6)]
    public double OneHotWeight { get; init; } = 1;
    [SpecKey("one-hot loss: ce (the paper) or l1 (the seed's variant)", Choices = ["ce", "l1"])]
    public string OneHot { get; init; } = "ce";
    [SpecKey("L_a: paper (-l1 norm of the features per sample) or code (-mean |f| over samples and features)", Choices = ["paper", "code"])]
    public string Activation { get; init; } = "paper";
    [SpecKey("L_ie: paper (H_info with 1/k, natural log), code (log10, no 1/k) or per-sample (the seed's variant)", Choices = ["paper", "code", "per-sample"])]
    public string Entropy { get; init; } = "paper";
    [SpecKey("steps between test-set evaluations", Min = 1)]
    public int EvalEvery { get; init; } = 1000;
    [SpecKey("images in the PNG drawn at each evaluation", Min = 0, Max = 1024)]
    public int SampleGrid { get; init; } = 64;
    /// <summary>
    /// Clamp the generator's output to the values real pixels in [0, 1] take after normalisation
    /// (the official generator ends in BatchNorm, whose output is unbounded). Off: as coded.
    /// </summary>
    [SpecKey("clamp generated images to the normalised range of real pixels (off: as coded)")]
    public bool ClampToPixelRange { get; init; }

    public IEnumerable<(string Key, string Reason)> Problems()
    {
        if (GeneratorWidth % 2 != 0) yield return ("generator_width", "must be even (the second block has half the width)");
    }
}

/// <summary>
/// `method: dafl`: a generator learns, through the frozen teacher, to produce inputs the teacher
/// answers as it does real data; the student learns the teacher's probabilities on them.
/// </summary>
public sealed class DaflMethod : MethodDefinition
{
    public override string Name => "dafl";
    public override string Summary => "data-free: a generator trained with L_oh + alpha L_a + beta L_ie through the teacher; the student learns p_T on its batches";
    public override string Reference => "SPEC.md §3";
    public override string SectionName => "dafl";
    public override object SectionDefaults => new DaflSpec();
    public override TeacherUse Teacher => TeacherUse.Required;
    public override bool StudentSeesData => false;
    public override bool SourceUsesTeacher => true;

    public override int? PipelineBatchSize(RunSpec spec) => spec.SettingsOf<DaflSpec>().BatchSize;

    public override IStepTrainer CreateTrainer(MethodContext c) =>
        new DaflTrainer(c.Teacher!, c.Student, c.Spec.SettingsOf<DaflSpec>(), c.Spec.Student.Train, c.Device, c.Spec.Seed,
            PixelRange.Normalised(c.Data.Mean, c.Data.Std));

    public override int EvalEvery(RunSpec spec) => spec.SettingsOf<DaflSpec>().EvalEvery;
    public override int SampleGrid(RunSpec spec) => spec.SettingsOf<DaflSpec>().SampleGrid;
    public override long SynthesisedImages(RunSpec spec, long studentSteps) => studentSteps * spec.SettingsOf<DaflSpec>().BatchSize;
    public override StudentObjective Objective(RunSpec spec) => new StudentObjective.SoftTarget(1);

    /// <summary>The generator (its initial weights depend on the seed alone).</summary>
    public override IStepSource CreateSource(SourceContext c) =>
        new DaflSynthesizer(c.Teacher!, c.Spec.SettingsOf<DaflSpec>(), c.Device, c.Spec.Seed, PixelRange.Normalised(c.Data.Mean, c.Data.Std));

    public override long PipelineStudentSteps(RunSpec spec, long trainImages) => spec.SettingsOf<DaflSpec>().Steps;
    public override int PipelineEvalEvery(RunSpec spec) => spec.SettingsOf<DaflSpec>().EvalEvery;
}
