namespace Distill.Engine.Methods;

/// <summary>
/// `method: adi`: DeepInversion whose rounds also compete with the student (1 - JS(p_T, p_S)), so
/// that new images are ones the student still gets wrong. It reads the `deepinversion:` section,
/// with a competition weight of 1 by default.
/// </summary>
public sealed class AdiMethod : DeepInversionMethod
{
    public override string Name => "adi";
    public override string Summary => "Adaptive DeepInversion: DeepInversion plus the competition term against the live student";
    public override string Reference => "SPEC.md §4";
    public override object SectionDefaults => new DeepInversionSpec { CompetitionWeight = 1 };
    protected override bool Adaptive => true;
}
