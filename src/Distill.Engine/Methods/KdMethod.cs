using Distill.Engine.Pipeline;
using Distill.Engine.Specs;

namespace Distill.Engine.Methods;

/// <summary>The `kd:` section: Hinton KD's temperature and label weight (also read by tfkd-self).</summary>
public sealed record KdSpec
{
    [SpecKey("softmax temperature T of teacher and student", Min = 0, Max = 1000, MinExclusive = true)]
    public double Temperature { get; init; } = 4;
    [SpecKey("weight of the cross-entropy on true labels; 1 - alpha goes to T^2 KL(p_T || p_S)", Min = 0, Max = 1)]
    public double Alpha { get; init; } = 0.1;
}

/// <summary>
/// `method: kd`: Hinton KD on real data. Reversed KD (the student teaches its teacher) and
/// Defective KD (a poorly trained teacher) are kd specs that choose other models.
/// </summary>
public sealed class KdMethod : RealDataMethod
{
    public override string Name => "kd";
    public override string Summary => "Hinton KD on real data: alpha CE(y, p_S) + (1 - alpha) T^2 KL(p_T^T || p_S^T); Re-KD and De-KD are kd specs";
    public override string Reference => "SPEC.md §1, §2 (Re-KD, De-KD)";
    public override string SectionName => "kd";
    public override object SectionDefaults => new KdSpec();
    public override TeacherUse Teacher => TeacherUse.Required;

    public override StudentObjective Objective(RunSpec spec) => Hinton(spec);

    /// <summary>Hinton KD with the kd: section's T and alpha (kd and tfkd-self).</summary>
    internal static StudentObjective Hinton(RunSpec spec)
    {
        var kd = spec.SettingsOf<KdSpec>();
        return new StudentObjective.HintonKd(kd.Temperature, kd.Alpha);
    }
}
