using Distill.Engine.Specs;

namespace Distill.Engine.Methods;

/// <summary>`method: supervised`: one model trained on labelled data with cross-entropy (the teachers, the baselines).</summary>
public sealed class SupervisedMethod : MethodDefinition
{
    public override string Name => "supervised";
    public override string Summary => "train the student on labelled data with cross-entropy (teachers, baselines)";
    public override string Reference => "SPEC.md §1 (the student trained alone)";

    public override IStepTrainer CreateTrainer(MethodContext c) =>
        new RealDataTrainer("student", c.Student, c.Data, c.Spec.Student.Train, new RealDataObjective.CrossEntropy(), c.Device, c.Spec.Seed);
}
