using Distill.Engine.Pipeline;
using Distill.Engine.Specs;

namespace Distill.Engine.Methods;

/// <summary>`method: tfkd-self`: the student's architecture, trained normally, teaches a fresh copy of itself with the KD loss.</summary>
public sealed class TfKdSelfMethod : RealDataMethod
{
    public override string Name => "tfkd-self";
    public override string Summary => "teacher-free KD: the student's architecture trained normally teaches a fresh copy (KD loss, kd: section)";
    public override string Reference => "SPEC.md §2";
    public override string SectionName => "kd";
    public override object SectionDefaults => new KdSpec();
    public override TeacherUse Teacher => TeacherUse.OwnArchitecture;

    public override IEnumerable<(string Key, string Reason)> Problems(RunSpec spec)
    {
        if (spec.Teacher is { } t && t.Arch != spec.Student.Arch)
            yield return ("teacher.arch", "tfkd-self: the teacher is the student's own architecture trained normally; leave teacher out or use the same arch");
    }

    public override StudentObjective Objective(RunSpec spec) => KdMethod.Hinton(spec);
}
