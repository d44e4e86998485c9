using Distill.Engine.Pipeline;
using Distill.Engine.Specs;
using TorchSharp;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>The `noise:` section.</summary>
public sealed record NoiseSpec
{
    [SpecKey("student steps, one fresh batch of noise each", Min = 1)]
    public int Steps { get; init; } = 24_000;
    [SpecKey("images of N(0, 1) noise per batch (in the normalised input space)", Min = 1, Max = 1 << 16)]
    public int BatchSize { get; init; } = 512;
    [SpecKey("temperature of the teacher's labels and the student's soft-target loss", Min = 0, Max = 1000, MinExclusive = true)]
    public double Temperature { get; init; } = 1;
    [SpecKey("steps between test-set evaluations", Min = 1)]
    public int EvalEvery { get; init; } = 1000;
}

/// <summary>
/// `method: noise`: the student learns by KD on N(0, 1) noise labelled by the teacher, DAFL paper
/// Table 1's "random normal inputs" baseline (88.01% for LeNet-5 -> LeNet-5-half on MNIST): what
/// a data-free student gets from inputs no generator has shaped.
/// </summary>
public sealed class NoiseMethod : MethodDefinition
{
    public override string Name => "noise";
    public override string Summary => "baseline: KD at T on N(0, 1) noise labelled by the teacher (DAFL Table 1, 'random normal inputs')";
    public override string Reference => "SPEC.md §3 (Table 1)";
    public override string SectionName => "noise";
    public override object SectionDefaults => new NoiseSpec();
    public override TeacherUse Teacher => TeacherUse.Required;
    public override bool StudentSeesData => false;

    public override int? PipelineBatchSize(RunSpec spec) => spec.SettingsOf<NoiseSpec>().BatchSize;

    public override StudentObjective Objective(RunSpec spec) => new StudentObjective.SoftTarget(spec.SettingsOf<NoiseSpec>().Temperature);

    public override IStepSource CreateSource(SourceContext c) =>
        new NoiseSource(c.Spec.SettingsOf<NoiseSpec>().BatchSize, c.Data.Channels, c.Spec.Data.ImageSize, c.Spec.Seed, c.Device);

    public override long PipelineStudentSteps(RunSpec spec, long trainImages) => spec.SettingsOf<NoiseSpec>().Steps;
    public override int PipelineEvalEvery(RunSpec spec) => spec.SettingsOf<NoiseSpec>().EvalEvery;
    public override int EvalEvery(RunSpec spec) => spec.SettingsOf<NoiseSpec>().EvalEvery;
    public override long SynthesisedImages(RunSpec spec, long studentSteps) => studentSteps * spec.SettingsOf<NoiseSpec>().BatchSize;
}

/// <summary>Batches of N(0, 1) noise from a generator seeded by the run's seed; its state is the step and the generator.</summary>
public sealed class NoiseSource(int batchSize, int channels, int imageSize, long seed, Device device) : IStepSource
{
    private readonly Generator rng = new(unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + 0x6E6F697365UL));

    public long Step { get; private set; }

    public SourceBatch Next(bool wantMetrics)
    {
        using var scope = NewDisposeScope();   // the CPU draw, when it moves to another device or is copied
        var x = randn([batchSize, channels, imageSize, imageSize], generator: rng).to(device); // the CPU generator: same inputs on every device
        Step++;
        return new SourceBatch(x.DetachFromDisposeScope(), null, null, null);
    }

    public Tensor? Samples(int count) => null;

    public void ScaleLearningRates(double factor) { }

    public bool CanRollBack => false;
    public void RollBack(BinaryReader checkpoint, double lrFactor) => throw new NotSupportedException("it learns nothing across batches");

    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "noise-source");
        w.Write(Step);
        StateIo.WriteGenerator(w, rng);
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, "noise-source");
        Step = r.ReadInt64();
        StateIo.ReadGenerator(r, rng);
    }

    public void Dispose() => rng.Dispose();
}
