using Distill.Engine.Specs;

namespace Distill.Engine.Sweeps;

/// <summary>
/// A sweep as read from YAML: a base run spec, the keys it varies and how, the searcher, the
/// scheduler, the metric and the limits. Read by <see cref="SweepParser"/>; each trial's run spec is
/// the base spec with its configuration's values at their paths (<see cref="SpecYaml.With"/>).
/// </summary>
public sealed record SweepSpec
{
    public required string Name { get; init; }
    /// <summary>Seeds the searcher and the scheduler's random choices (not the trials: their seed is the base spec's, or swept).</summary>
    public required int Seed { get; init; }
    /// <summary>The base run spec's text, and the file it came from (the sweep file itself for an inline one).</summary>
    public required string BaseYaml { get; init; }
    public required string BaseFile { get; init; }
    public required RunSpec Base { get; init; }
    public required IReadOnlyList<Dimension> Space { get; init; }
    public required SearchSettings Search { get; init; }
    public required SchedulerSettings Scheduler { get; init; }
    /// <summary>Each configuration runs with this many seeds: the base seed, +1, ... (results are mean ± std).</summary>
    public required int Repeats { get; init; }
    public required string Metric { get; init; }
    /// <summary>"max" or "min".</summary>
    public required string Mode { get; init; }
    public required SweepLimits Limits { get; init; }
    /// <summary>The student steps of a trial run to its end (the base spec's).</summary>
    public required long TrialSteps { get; init; }
    public string SourceFile { get; init; } = "";
    public string SourceText { get; init; } = "";

    /// <summary>The metric as a score where higher is better.</summary>
    public double Score(double metric) => Mode == "max" ? metric : -metric;

    /// <summary>Whether the metric is the accuracy of the evaluations (what a run's summary carries), not a loss.</summary>
    public bool IsAccuracy => Metric is Training.DataSplits.TestAccuracy or Training.DataSplits.ValidationAccuracy;

    /// <summary>How many trials the search makes at most before the limits (null: as many as the budget allows).</summary>
    public long? SearchTrials => Search.Kind == "grid"
        ? Space.OfType<GridDimension>().Aggregate(1L, (n, d) => n * d.Options.Count) * Search.Samples
        : Search.Samples;
}

/// <summary>search: how configurations are chosen.</summary>
public sealed record SearchSettings
{
    public static readonly IReadOnlyList<string> Kinds = ["grid", "random", "tpe"];

    [SpecKey("grid: every combination of the grid dimensions (others drawn at random for each); random: independent draws; " +
             "tpe: tree-structured Parzen estimator, as Optuna's default sampler", ChoicesFrom = typeof(SearchSettings), ChoicesMember = nameof(Kinds))]
    public string Kind { get; init; } = "grid";
    [SpecKey("grid: how many times the grid is repeated (with fresh draws of its non-grid dimensions); random and tpe: how many configurations", Min = 1, Max = 1_000_000)]
    public int Samples { get; init; } = 1;
    [SpecKey("grid: visit the combinations in an order drawn from the sweep's seed instead of the listed one (with asha, a grid " +
             "listed from worst to best would have each trial beat all before it, and be promoted)")]
    public bool Shuffle { get; init; }
    [SpecKey("tpe: configurations drawn at random before the model is used", Min = 1, Max = 10_000)]
    public int StartupTrials { get; init; } = 10;
    [SpecKey("tpe: candidates drawn from the good configurations' model, of which the best ratio is taken", Min = 1, Max = 10_000)]
    public int Candidates { get; init; } = 24;
    [SpecKey("tpe: fraction of the finished configurations that count as good (at most 25 of them)", Min = 0, Max = 1, MinExclusive = true, MaxExclusive = true)]
    public double Gamma { get; init; } = 0.1;
}

/// <summary>scheduler: which trials go on, stop or copy another.</summary>
public sealed record SchedulerSettings
{
    public static readonly IReadOnlyList<string> Kinds = ["fifo", "median", "asha", "pbt"];

    [SpecKey("fifo: every trial runs to its end; median: median stopping rule; asha: asynchronous successive halving; " +
             "pbt: population-based training", ChoicesFrom = typeof(SchedulerSettings), ChoicesMember = nameof(Kinds))]
    public string Kind { get; init; } = "fifo";
    [SpecKey("median, asha: student steps before a trial can be stopped (asha: the first rung); 0: the trial's steps / 27 (asha) or / 10 (median)", Min = 0)]
    public int GracePeriod { get; init; }
    [SpecKey("asha: 1/rf of the trials at a rung are promoted to the next, rf times as many steps on", Min = 1, MinExclusive = true, Max = 100)]
    public double ReductionFactor { get; init; } = 3;
    public static readonly IReadOnlyList<string> AshaModes = ["promote", "stop"];
    [SpecKey("asha: promote (Li et al.: a trial pauses at each rung, its slot goes to another, and it goes on from its checkpoint " +
             "once it is in the top 1/rf there) or stop (Ray Tune's AsyncHyperBand: a trial goes on unless it is below the top 1/rf " +
             "of those that reached the rung before it)", ChoicesFrom = typeof(SchedulerSettings), ChoicesMember = nameof(AshaModes))]
    public string Mode { get; init; } = "promote";
    [SpecKey("asha, pbt: the steps a trial runs at most; 0: the base spec's student steps", Min = 0)]
    public int MaxSteps { get; init; }
    [SpecKey("median: other trials' results needed at a step before a trial is compared with their median", Min = 1, Max = 10_000)]
    public int MinSamples { get; init; } = 3;
    [SpecKey("pbt: student steps between a trial's exploit and explore decisions; 0: the trial's steps / 10", Min = 0)]
    public int Interval { get; init; }
    [SpecKey("pbt: decide at a step once every trial has paused there (Ray Tune's synch=True: the same scores give the same decisions " +
             "whatever order the trials arrive in); false: at each pause, among the trials that paused at that step before it")]
    public bool Synch { get; init; } = true;
    [SpecKey("pbt: the bottom fraction copies a trial of the top fraction", Min = 0, Max = 0.5, MinExclusive = true)]
    public double Quantile { get; init; } = 0.25;
    [SpecKey("pbt: chance that a copied hyperparameter is drawn afresh instead of perturbed", Min = 0, Max = 1)]
    public double ResampleProbability { get; init; } = 0.25;
    [SpecKey("pbt: a perturbed number is multiplied by one of these two factors (the first below 1, the second above)", Min = 0, MinExclusive = true)]
    public double PerturbDown { get; init; } = 0.8;
    [SpecKey("pbt: the factor above 1", Min = 1, MinExclusive = true)]
    public double PerturbUp { get; init; } = 1.2;

    /// <summary>ASHA that pauses trials at rungs and promotes them (the run's steps stop at each rung).</summary>
    public bool Promotes => Kind == "asha" && Mode == "promote";

    /// <summary>The keys each kind reads (the others are refused when given).</summary>
    public static IReadOnlyList<string> KeysOf(string kind) => kind switch
    {
        "median" => ["grace_period", "min_samples"],
        "asha" => ["grace_period", "reduction_factor", "max_steps", "mode"],
        "pbt" => ["max_steps", "interval", "synch", "quantile", "resample_probability", "perturb_down", "perturb_up"],
        _ => [],
    };
}

/// <summary>limits: concurrency and budgets.</summary>
public sealed record SweepLimits
{
    [SpecKey("trials running at once (each also needs a free slot on a GPU node)", Min = 1, Max = 100_000)]
    public int MaxConcurrent { get; init; } = 4;
    [SpecKey("trials started at most (0: as many as the search makes)", Min = 0)]
    public int MaxTrials { get; init; }
    [SpecKey("student steps of all trials together at most (0: no limit); no trial starts past it, running ones finish", Min = 0)]
    public double MaxStudentSteps { get; init; }
    [SpecKey("wall-clock minutes at most (0: no limit); then running trials stop and the sweep ends", Min = 0)]
    public double MaxWallMinutes { get; init; }
    [SpecKey("times a failed trial is started again (a new run from where its current run began: step 0, or the checkpoint a pbt " +
             "exploit began it from) before it is marked failed", Min = 0, Max = 100)]
    public int MaxFailures { get; init; } = 2;
}
