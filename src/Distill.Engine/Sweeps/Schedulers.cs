namespace Distill.Engine.Sweeps;

/// <summary>A trial's metric at one of its evaluations, as a score where higher is better.</summary>
public sealed record TrialReport(string TrialId, long Step, double Score, TrialConfig Config);

public enum Verdict
{
    /// <summary>The trial goes on.</summary>
    Continue,
    /// <summary>The trial stops here (early stopping); its result so far stands.</summary>
    Stop,
}

/// <summary>What a scheduler decided about a report, and why, in words a user reads in the trials table.</summary>
public sealed record SchedulerDecision(Verdict Verdict, string Reason)
{
    public static readonly SchedulerDecision Go = new(Verdict.Continue, "");
}

/// <summary>
/// Decides, report by report, which trials go on. A scheduler's state is the fold of the reports
/// it was given, in order, and its random choices come from the sweep's seed and the report's
/// number: the sweep coordinator journals the reports, so a sweep resumed after a crash has the
/// same scheduler in the same state (Ray Tune's restore falls back to FIFO, ray-project/ray#30838),
/// and the same reports give the same decisions.
/// </summary>
public abstract class Scheduler(SweepSpec sweep)
{
    protected SweepSpec Sweep { get; } = sweep;
    protected SchedulerSettings Settings => Sweep.Scheduler;

    /// <summary>How many reports were decided so far.</summary>
    public long Reports { get; private set; }

    public SchedulerDecision OnReport(TrialReport r)
    {
        var d = Decide(r, Reports);
        Reports++;
        return d;
    }

    protected abstract SchedulerDecision Decide(TrialReport r, long number);

    /// <summary>The trial ended (finished, stopped or failed for good): it is no longer a peer.</summary>
    public virtual void OnTrialEnded(string trialId) { }

    public static Scheduler For(SweepSpec sweep) => sweep.Scheduler.Kind switch
    {
        "fifo" => new FifoScheduler(sweep),
        "median" => new MedianStoppingScheduler(sweep),
        "asha" => new AshaScheduler(sweep),
        "pbt" => new PbtScheduler(sweep),
        _ => throw new ArgumentException($"unknown scheduler '{sweep.Scheduler.Kind}'"),
    };

    /// <summary>The q-quantile of values with linear interpolation between order statistics.</summary>
    public static double Quantile(IReadOnlyCollection<double> values, double q) => QuantileOfSorted(values.Order().ToArray(), q);

    /// <summary><see cref="Quantile"/> of values already in ascending order.</summary>
    public static double QuantileOfSorted(IReadOnlyList<double> v, double q)
    {
        var pos = q * (v.Count - 1);
        var lo = (int)Math.Floor(pos);
        var hi = Math.Min(lo + 1, v.Count - 1);
        return v[lo] + (pos - lo) * (v[hi] - v[lo]);
    }

    /// <summary>A trial past max_steps stops, unless max_steps is its length: then it completes by itself.</summary>
    protected bool StopsAtMax(TrialReport r) => r.Step >= Settings.MaxSteps && Settings.MaxSteps < Sweep.TrialSteps;

    protected static string F(double d) => d.ToString("G6", System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>Every trial runs to its end.</summary>
public sealed class FifoScheduler(SweepSpec sweep) : Scheduler(sweep)
{
    protected override SchedulerDecision Decide(TrialReport r, long number) => SchedulerDecision.Go;
}

/// <summary>
/// Asynchronous successive halving (Li et al., MLSys 2020). Rungs at grace_period × rf^k steps
/// below max_steps. The first time a trial reports at or past a rung, its score is compared with the
/// scores recorded at that rung before it: below their (1 − 1/rf) quantile it stops, otherwise it
/// goes on to the next rung. No trial waits for others, so a slot is never idle.
/// </summary>
public sealed class AshaScheduler : Scheduler
{
    private readonly long[] milestones;
    private readonly Dictionary<long, Dictionary<string, double>> recorded = [];
    /// <summary>Each rung's scores in order, so that a cutoff costs no sort (a rung of a large sweep holds thousands).</summary>
    private readonly Dictionary<long, List<double>> sorted = [];

    public AshaScheduler(SweepSpec sweep) : base(sweep)
    {
        milestones = AshaPromotions.Milestones(Settings);
        foreach (var x in milestones) (recorded[x], sorted[x]) = ([], []);
    }

    public IReadOnlyList<long> Milestones => milestones;

    /// <summary>The scores recorded at a rung (its milestone), by trial.</summary>
    public IReadOnlyDictionary<string, double> At(long milestone) => recorded[milestone];

    protected override SchedulerDecision Decide(TrialReport r, long number)
    {
        if (StopsAtMax(r)) return new(Verdict.Stop, $"reached max_steps {Settings.MaxSteps}");
        // promote mode decides at the rungs where trials pause (AshaPromotions), not report by report
        if (Settings.Promotes) return SchedulerDecision.Go;
        for (var k = milestones.Length - 1; k >= 0; k--)
        {
            var m = milestones[k];
            if (r.Step < m) continue;
            var rung = recorded[m];
            if (rung.ContainsKey(r.TrialId)) break;
            var order = sorted[m];
            double? cutoff = rung.Count > 0 ? QuantileOfSorted(order, 1 - 1 / Settings.ReductionFactor) : null;
            rung[r.TrialId] = r.Score;
            var at = order.BinarySearch(r.Score);
            order.Insert(at < 0 ? ~at : at, r.Score);
            return cutoff is { } c && r.Score < c
                ? new(Verdict.Stop, $"rung {k} (step {m}): {F(r.Score)} is below the top 1/{F(Settings.ReductionFactor)} of {rung.Count - 1} trials there ({F(c)})")
                : new(Verdict.Continue, $"promoted at rung {k} (step {m})");
        }
        return SchedulerDecision.Go;
    }
}

/// <summary>
/// The median stopping rule (Golovin et al., KDD 2017): past the grace period, a trial whose best
/// score so far is below the median of the other trials' running means up to the same step stops
/// (when at least min_samples other trials have reported by then).
/// </summary>
public sealed class MedianStoppingScheduler(SweepSpec sweep) : Scheduler(sweep)
{
    /// <summary>A trial's report steps in order and the running sums of its scores: a running mean up to any step is a binary search.</summary>
    private sealed class History
    {
        public readonly List<long> Steps = [];
        public readonly List<double> Sums = [];
        public double Best = double.NegativeInfinity;

        public void Add(long step, double score)
        {
            Best = Math.Max(Best, score);
            if (Steps.Count == 0 || step >= Steps[^1])
            {
                Steps.Add(step);
                Sums.Add((Sums.Count > 0 ? Sums[^1] : 0) + score);
                return;
            }
            // out of order (the coordinator reports in step order; a caller might not): kept sorted
            var at = Steps.BinarySearch(step);
            at = at < 0 ? ~at : at;
            Steps.Insert(at, step);
            Sums.Insert(at, (at > 0 ? Sums[at - 1] : 0) + score);
            for (var k = at + 1; k < Sums.Count; k++) Sums[k] += score;
        }

        /// <summary>The mean of the scores reported at or before step; null when none was.</summary>
        public double? MeanUpTo(long step)
        {
            var i = Steps.BinarySearch(step);
            var n = i >= 0 ? LastOf(i) + 1 : ~i;
            return n == 0 ? null : Sums[n - 1] / n;
        }

        private int LastOf(int i)
        {
            while (i + 1 < Steps.Count && Steps[i + 1] == Steps[i]) i++;
            return i;
        }
    }

    private readonly Dictionary<string, History> history = [];

    protected override SchedulerDecision Decide(TrialReport r, long number)
    {
        if (!history.TryGetValue(r.TrialId, out var own)) history[r.TrialId] = own = new History();
        own.Add(r.Step, r.Score);
        if (r.Step < Settings.GracePeriod) return SchedulerDecision.Go;
        var means = new List<double>(history.Count);
        foreach (var (id, h) in history)
            if (id != r.TrialId && h.MeanUpTo(r.Step) is { } m) means.Add(m);
        if (means.Count < Settings.MinSamples) return SchedulerDecision.Go;
        var median = Quantile(means, 0.5);
        var best = own.Best;
        return best < median
            ? new(Verdict.Stop, $"step {r.Step}: best {F(best)} is below the median {F(median)} of {means.Count} other trials' running means")
            : SchedulerDecision.Go;
    }
}

/// <summary>A trial as PBT sees it when another pauses: its score at each step it paused at, and the step of its kept checkpoint (null: none to copy).</summary>
public sealed record PbtTrial(string TrialId, IReadOnlyDictionary<long, double> ScoreAt, long? CopyableAt, TrialConfig Config);

/// <summary>What PBT decided at a pause: go on as it is, or go on from Source's checkpoint with Config.</summary>
public sealed record PbtDecision(bool Exploit, string Reason, string? Source = null, long SourceStep = 0, TrialConfig? Config = null);

/// <summary>
/// Population-based training (Jaderberg et al., 2017). Every trial pauses every `interval` steps
/// with a checkpoint. At a pause at step k the trials that paused at k are ranked by their score
/// there; a trial in the bottom quantile goes on from the checkpoint of a trial drawn from the top
/// quantile (exploit: its weights, optimiser state and source state, at that trial's latest pause)
/// with that trial's hyperparameters perturbed (explore): each number multiplied by perturb_down or
/// perturb_up, each list value moved to a neighbour, or, with probability resample_probability,
/// drawn afresh. Trials are compared at the same step, so one that started later is not judged
/// against others' later scores. Pure: the decision is a function of the scores the sweep
/// coordinator journals, and its random draws of the sweep's seed and the pause.
/// </summary>
public sealed class PbtScheduler(SweepSpec sweep) : Scheduler(sweep)
{
    /// <summary>Reports decide nothing: PBT decides at the pauses (<see cref="AtPause"/>).</summary>
    protected override SchedulerDecision Decide(TrialReport r, long number) => SchedulerDecision.Go;

    /// <summary>The step a trial at `step` pauses at next: the next multiple of interval before max_steps; max_steps itself when a trial stops short of its end there; null: on to its end.</summary>
    public long? HoldAfter(long step)
    {
        var end = Math.Min(Settings.MaxSteps, Sweep.TrialSteps);
        var next = (step / Settings.Interval + 1) * Settings.Interval;
        return next < end ? next : end < Sweep.TrialSteps && step < end ? end : null;
    }

    /// <summary>Whether a pause at `step` is where the trial ends (max_steps short of its end).</summary>
    public bool EndsAt(long step) => step >= Settings.MaxSteps && Settings.MaxSteps < Sweep.TrialSteps;

    /// <summary>Trial `me` paused at `step`; `trials`: every trial that may be compared with it or copied (itself included). `salt` tells pauses apart (the same pause, the same draw).</summary>
    public PbtDecision AtPause(string me, long step, IReadOnlyList<PbtTrial> trials, long salt)
    {
        var cohort = trials.Where(t => t.ScoreAt.ContainsKey(step)).OrderByDescending(t => t.ScoreAt[step])
            .ThenBy(t => t.TrialId, StringComparer.Ordinal).ToArray();
        if (cohort.Length < 2) return new(false, $"step {step}: no other trial has paused there yet");
        var q = Math.Min((int)Math.Ceiling(cohort.Length * Settings.Quantile), cohort.Length / 2);
        var rank = Array.FindIndex(cohort, t => t.TrialId == me);
        if (rank < 0) return new(false, $"step {step}: no score there");
        var score = cohort[rank].ScoreAt[step];
        if (q == 0 || rank < cohort.Length - q)
            return new(false, $"step {step}: {F(score)} ranks {rank + 1} of {cohort.Length}, above the bottom {q}");
        var sources = cohort.Take(q).Where(t => t.TrialId != me && t.CopyableAt is not null).ToArray();
        if (sources.Length == 0) return new(false, $"step {step}: in the bottom {q} of {cohort.Length}, but no top trial's checkpoint is kept");
        var rng = new Random(unchecked((int)(((long)Sweep.Seed * 1_000_003L + salt) * 31 + step) & 0x7fffffff));
        var source = sources[rng.Next(sources.Length)];
        var config = Explore(source.Config, rng);
        return new(true, $"step {step}: {F(score)} in the bottom {q} of {cohort.Length}; continues from {source.TrialId} at step {source.CopyableAt} " +
            $"({F(source.ScoreAt[step])} at {step}) with {config}", source.TrialId, source.CopyableAt!.Value, config);
    }

    /// <summary>A neighbour of a configuration: what PBT's explore step tries next.</summary>
    public TrialConfig Explore(TrialConfig from, Random rng)
    {
        var values = new List<KeyValuePair<string, string>>();
        foreach (var d in Sweep.Space)
        {
            var v = from[d.Path];
            if (rng.NextDouble() < Settings.ResampleProbability) { values.Add(new(d.Path, d.Sample(rng))); continue; }
            var up = rng.NextDouble() < 0.5;
            var factor = up ? Settings.PerturbUp : Settings.PerturbDown;
            values.Add(new(d.Path, d switch
            {
                RangeDimension r => Dimension.Number(Math.Clamp(Parse(v) * factor, r.Low, r.High)),
                IntDimension i => Perturb(i, (long)Parse(v), factor, up),
                _ => Neighbour(d.Values!, v, up),
            }));
        }
        return new TrialConfig(values);
    }

    private static double Parse(string v) => double.Parse(v, System.Globalization.CultureInfo.InvariantCulture);

    private static string Perturb(IntDimension d, long v, double factor, bool up)
    {
        var k = (long)Math.Round((v * factor - d.Low) / d.Step);
        var old = (v - d.Low) / d.Step;
        if (k == old) k += up ? 1 : -1;
        return (d.Low + Math.Clamp(k, 0, d.Count - 1) * d.Step).ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    private static string Neighbour(IReadOnlyList<string> options, string v, bool up)
    {
        var i = options.ToList().IndexOf(v);
        return options[Math.Clamp(i + (up ? 1 : -1), 0, options.Count - 1)];
    }
}
