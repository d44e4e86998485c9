namespace Distill.Engine.Sweeps;

/// <summary>Where a trial is in promotion-based ASHA.</summary>
public enum RungPosition
{
    /// <summary>Training towards its next rung (or its end).</summary>
    Running,
    /// <summary>Waiting at its last rung to be promoted or stopped.</summary>
    Paused,
    /// <summary>Ran to its end.</summary>
    Done,
    /// <summary>Ended without going on from its last rung (stopped, failed or cancelled).</summary>
    Out,
}

/// <summary>A trial as promotion-based ASHA sees it: its score at each rung it reached (higher is better), in rung order.</summary>
public sealed record RungTrial(string TrialId, IReadOnlyList<double> Scores, RungPosition Position);

/// <summary>A decision about a paused trial: go on to HoldAt (null: to the end), or stop there.</summary>
public sealed record RungDecision(string TrialId, bool Promote, long? HoldAt, string Reason);

/// <summary>
/// Asynchronous successive halving with promotions (Li et al., MLSys 2020, Algorithm 2): a trial
/// pauses at every rung; when a slot is free, the highest rung with a paused trial in its top
/// ⌊n/rf⌋ that has not been promoted yet sends that trial on, and only when there is none does a
/// new configuration start. Pure: the decisions are a function of the trials' rung scores, which
/// the sweep coordinator journals, so a recovered sweep decides as the lost one would have.
/// </summary>
public static class AshaPromotions
{
    /// <summary>The rungs' steps: grace_period × rf^k below max_steps.</summary>
    public static long[] Milestones(SchedulerSettings s)
    {
        var m = new List<long>();
        for (double at = s.GracePeriod; at < s.MaxSteps; at *= s.ReductionFactor) m.Add((long)Math.Round(at));
        return m.Distinct().ToArray();
    }

    /// <summary>The step a trial that reached <paramref name="rungs"/> rungs pauses at next (null: it runs to its end).</summary>
    public static long? HoldAfter(long[] milestones, int rungs) => rungs < milestones.Length ? milestones[rungs] : null;

    /// <summary>The next promotion, from the highest rung down; null when no paused trial has earned one.</summary>
    public static RungDecision? Next(IReadOnlyList<RungTrial> trials, long[] milestones, double rf)
    {
        for (var k = milestones.Length - 1; k >= 0; k--)
        {
            var at = trials.Where(t => t.Scores.Count > k).ToArray();
            var quota = (int)Math.Floor(at.Length / rf);
            if (quota == 0) continue;
            // the current top, not a count of past promotions: a trial that reaches the top after
            // others went on from this rung is promoted too (Algorithm 2's "not already promoted")
            var top = at.OrderByDescending(t => t.Scores[k]).ThenBy(t => t.TrialId, StringComparer.Ordinal).Take(quota);
            if (top.FirstOrDefault(t => t.Position == RungPosition.Paused && t.Scores.Count == k + 1) is { } p)
                return new(p.TrialId, true, HoldAfter(milestones, k + 1),
                    $"promoted from rung {k} (step {milestones[k]}): {F(p.Scores[k])} is in the top {quota} of {at.Length} there");
        }
        return null;
    }

    /// <summary>
    /// When no trial runs and no configuration is left to start, the paused trials of the highest
    /// rung that has any are settled: the best goes on if no trial has gone past that rung (so that
    /// the sweep ends with a trial run to its end), else they all stop, beaten there.
    /// </summary>
    public static IReadOnlyList<RungDecision> Settle(IReadOnlyList<RungTrial> trials, long[] milestones)
    {
        if (trials.Any(t => t.Position == RungPosition.Running)) return [];
        var paused = trials.Where(t => t.Position == RungPosition.Paused).ToArray();
        if (paused.Length == 0) return [];
        var k = paused.Max(t => t.Scores.Count) - 1;
        var here = paused.Where(t => t.Scores.Count == k + 1).OrderByDescending(t => t.Scores[k]).ThenBy(t => t.TrialId, StringComparer.Ordinal).ToArray();
        if (!trials.Any(t => WentOn(t, k)))
            return [new(here[0].TrialId, true, HoldAfter(milestones, k + 1), $"the best left at rung {k} (step {milestones[k]}) with no more trials to come: goes on")];
        return here.Select(t => new RungDecision(t.TrialId, false, null,
            $"rung {k} (step {milestones[k]}): {F(t.Scores[k])} is not in the top 1/rf there, and no more trials are to come")).ToArray();
    }

    /// <summary>Whether a trial went on from rung k: it reached a later rung, or left rung k running or to its end.</summary>
    private static bool WentOn(RungTrial t, int k) =>
        t.Scores.Count > k + 1 || t.Scores.Count == k + 1 && t.Position is RungPosition.Running or RungPosition.Done;

    private static string F(double d) => d.ToString("G6", System.Globalization.CultureInfo.InvariantCulture);
}
