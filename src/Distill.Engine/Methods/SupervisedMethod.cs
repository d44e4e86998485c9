using Distill.Engine.Pipeline;
using Distill.Engine.Specs;

namespace Distill.Engine.Methods;

/// <summary>`method: supervised`: one model trained on labelled data with cross-entropy (the teachers, the baselines).</summary>
public sealed class SupervisedMethod : RealDataMethod
{
    public override string Name => "supervised";
    public override string Summary => "train the student on labelled data with cross-entropy (teachers, baselines)";
    public override string Reference => "SPEC.md §1 (the student trained alone)";

    public override StudentObjective Objective(RunSpec spec) => new StudentObjective.CrossEntropy();
}
