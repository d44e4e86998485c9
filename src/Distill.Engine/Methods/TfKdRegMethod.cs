using Distill.Engine.Losses;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;

namespace Distill.Engine.Methods;

/// <summary>The `tfkd_reg:` section: the virtual teacher.</summary>
public sealed record TfKdRegSpec
{
    [SpecKey("the virtual teacher's probability of the true class", Min = 0.1, Max = 1, MinExclusive = true)]
    public double CorrectProbability { get; init; } = 0.9;
    [SpecKey("temperature the virtual distribution is softened at", Min = 0, Max = 1000, MinExclusive = true)]
    public double Temperature { get; init; } = 20;
    [SpecKey("weight of the virtual-teacher term; 1 - alpha goes to CE(y, p_S)", Min = 0, Max = 1)]
    public double Alpha { get; init; } = 0.1;
    [SpecKey("power: p_v^(1/T) renormalised (the paper); code: softmax(p_v / T) (the official code)", Choices = ["power", "code"])]
    public string Softening { get; init; } = "power";
}

/// <summary>`method: tfkd-reg`: teacher-free KD with a virtual teacher that is always right.</summary>
public sealed class TfKdRegMethod : RealDataMethod
{
    public override string Name => "tfkd-reg";
    public override string Summary => "teacher-free KD, virtual teacher: (1 - alpha) CE(y, p_S) + alpha T^2 KL(p_v^T || p_S^T)";
    public override string Reference => "SPEC.md §2";
    public override string SectionName => "tfkd_reg";
    public override object SectionDefaults => new TfKdRegSpec();

    public override StudentObjective Objective(RunSpec spec)
    {
        var r = spec.SettingsOf<TfKdRegSpec>();
        var softening = r.Softening == "code" ? Distillation.VirtualSoftening.Code : Distillation.VirtualSoftening.Power;
        return new StudentObjective.VirtualTeacher(r.CorrectProbability, r.Temperature, r.Alpha, softening);
    }
}
