using Distill.Engine.Specs;

namespace Distill.Engine.Methods;

/// <summary>What the guard decided about the latest metrics.</summary>
public readonly record struct GuardVerdict(bool Healthy, string? Reason)
{
    public static readonly GuardVerdict Ok = new(true, null);
    public static GuardVerdict Bad(string reason) => new(false, reason);
}

/// <summary>
/// Detects a run going bad: a non-finite loss; for generator methods a collapsed generator (the
/// teacher labels a batch with fewer than min_classes classes, or the student's KL to the teacher
/// is ~0 because the images no longer vary); or an evaluation far below the best so far. The
/// official DAFL code, run unchanged, collapsed this way (97.85% to 86.45% for good).
/// The runner answers a bad verdict by rolling back to the last good state with lower rates.
/// </summary>
public sealed class DivergenceGuard(GuardSpec spec)
{
    public double BestAccuracy { get; private set; } = double.NegativeInfinity;

    /// <summary>Steps between the checks that also mark a state good to roll back to (guard.check_every).</summary>
    public long CheckEvery => spec.CheckEvery;

    /// <summary>Whether a run that has rolled back `rollbacks` times may roll back again (else it gives up and fails).</summary>
    public static bool MayRollBack(GuardSpec spec, int rollbacks) => spec.Enabled && rollbacks < spec.MaxRollbacks;

    /// <summary>
    /// Whether a loop reads step `step`'s metrics: the first, every `logEvery`-th, every
    /// check_every-th with a guard, and the steps the caller needs them on (`alsoHere`:
    /// evaluations, and the actors' pauses and checkpoints). The engine loop and the student entity
    /// both read them on these steps, and whatever is read is checked.
    /// </summary>
    public static bool ReadsMetrics(DivergenceGuard? guard, long step, long logEvery, bool alsoHere) =>
        step == 1 || step % logEvery == 0 || guard is not null && step % guard.CheckEvery == 0 || alsoHere;

    /// <summary>The first metric that is NaN or infinite, as a reason ("loss is NaN"), or null. It ends a run even with the guard off.</summary>
    public static string? NotFinite(IReadOnlyDictionary<string, double> metrics)
    {
        foreach (var (k, v) in metrics)
            if (!double.IsFinite(v)) return $"{k} is {v}";
        return null;
    }

    public GuardVerdict CheckStep(IReadOnlyDictionary<string, double> metrics)
    {
        if (NotFinite(metrics) is { } reason) return GuardVerdict.Bad(reason);
        if (metrics.TryGetValue("classes", out var classes) && classes < spec.MinClasses)
            return GuardVerdict.Bad($"generator collapse: the teacher sees only {classes} class(es) in a generated batch (< {spec.MinClasses})");
        if (metrics.TryGetValue("kl_kd", out var kl) && metrics.TryGetValue("gen_std", out var std) && kl < spec.MinLoss && std < 1e-3)
            return GuardVerdict.Bad($"generator collapse: constant output (std {std:G3}) and student KL {kl:G3}");
        return GuardVerdict.Ok;
    }

    /// <summary>"now 0.25x the schedule's": a learning-rate scale as the rollback messages give it.</summary>
    public static string Scale(double scale) => $"now {scale.ToString("G4", System.Globalization.CultureInfo.InvariantCulture)}x the schedule's";

    /// <summary>A best from before a resume: later evaluations are measured against it.</summary>
    public void Remember(double best) => BestAccuracy = Math.Max(BestAccuracy, best);

    /// <summary>Records an evaluation; bad when it falls more than max_accuracy_drop below the best.</summary>
    public GuardVerdict CheckEvaluation(double accuracy)
    {
        if (!double.IsFinite(accuracy)) return GuardVerdict.Bad($"accuracy is {accuracy}");
        if (accuracy < BestAccuracy - spec.MaxAccuracyDrop)
            return GuardVerdict.Bad($"accuracy {accuracy:F2}% fell more than {spec.MaxAccuracyDrop} points below the best {BestAccuracy:F2}%");
        BestAccuracy = Math.Max(BestAccuracy, accuracy);
        return GuardVerdict.Ok;
    }
}
