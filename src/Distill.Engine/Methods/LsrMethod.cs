using Distill.Engine.Pipeline;
using Distill.Engine.Specs;

namespace Distill.Engine.Methods;

/// <summary>The `lsr:` section.</summary>
public sealed record LsrSpec
{
    [SpecKey("smoothing: the target is (1 - epsilon) onehot(y) + epsilon u", Min = 0, Max = 1, MaxExclusive = true)]
    public double Epsilon { get; init; } = 0.1;
}

/// <summary>`method: lsr`: label smoothing regularisation.</summary>
public sealed class LsrMethod : RealDataMethod
{
    public override string Name => "lsr";
    public override string Summary => "label smoothing: cross-entropy to (1 - epsilon) onehot(y) + epsilon / k";
    public override string Reference => "SPEC.md §2";
    public override string SectionName => "lsr";
    public override object SectionDefaults => new LsrSpec();

    public override StudentObjective Objective(RunSpec spec) => new StudentObjective.LabelSmoothing(spec.SettingsOf<LsrSpec>().Epsilon);
}
