using Cluster.Contracts.Runs;
using MessagePack;

namespace Cluster.Contracts.Sweeps;

// The sweep coordinator's protocol: clients submit, query and cancel sweeps; the run coordinator
// reports its trials' metrics and ends.

/// <summary>Submit a sweep spec (its YAML text). Answered with <see cref="SweepAccepted"/> or <see cref="SweepRejected"/>.</summary>
[MessagePackObject]
public sealed record SubmitSweep(
    [property: Key(0)] string SpecYaml,
    [property: Key(1)] string SpecFile,
    [property: Key(2)] string? SweepId) : ISweepCommand;

[MessagePackObject]
public sealed record SweepAccepted([property: Key(0)] string SweepId, [property: Key(1)] bool AlreadyKnown) : ISweepCommand;

[MessagePackObject]
public sealed record SweepRejected([property: Key(0)] string Reason) : ISweepCommand;

/// <summary>One sweep (or every sweep when SweepId is null). Answered with <see cref="SweepStatusReport"/>.</summary>
[MessagePackObject]
public sealed record GetSweepStatus([property: Key(0)] string? SweepId) : ISweepCommand;

[MessagePackObject]
public sealed record SweepStatusReport([property: Key(0)] SweepSummary[] Sweeps) : ISweepCommand;

/// <summary>Stop a sweep for good: its running trials are cancelled, no new one starts. Answered with <see cref="SweepStatusReport"/> (that sweep).</summary>
[MessagePackObject]
public sealed record CancelSweep([property: Key(0)] string SweepId, [property: Key(1)] string Reason) : ISweepCommand;

public enum SweepState : byte { Running = 0, Completed = 1, Cancelled = 2, Failed = 3 }

public enum TrialState : byte
{
    /// <summary>Made by the searcher, waiting for a place under max_concurrent.</summary>
    Pending = 0,
    Running = 1,
    /// <summary>Ran to its end.</summary>
    Completed = 2,
    /// <summary>Stopped early by the scheduler; its result so far stands.</summary>
    Stopped = 3,
    /// <summary>Failed more than max_failures times.</summary>
    Failed = 4,
    /// <summary>The sweep was cancelled (or ran out of time) while it ran.</summary>
    Cancelled = 5,
    /// <summary>Waits at an ASHA rung (its run paused, its state kept) to be promoted or stopped.</summary>
    Paused = 6,
    /// <summary>Launched, and its run waits for a slot on the cluster: what status shows; the journal keeps it as running.</summary>
    Queued = 7,
}

/// <summary>What `status` shows of a sweep.</summary>
[MessagePackObject]
public sealed record SweepSummary(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string Name,
    [property: Key(2)] SweepState State,
    [property: Key(3)] string Metric,
    [property: Key(4)] string Mode,
    [property: Key(5)] string[] Paths,
    [property: Key(6)] TrialSummary[] Trials,
    [property: Key(7)] long StudentSteps,
    [property: Key(8)] string? Message);

[MessagePackObject]
public sealed record TrialSummary(
    [property: Key(0)] string TrialId,
    [property: Key(1)] string RunId,
    [property: Key(2)] string[] Values,
    [property: Key(3)] TrialState State,
    [property: Key(4)] long Step,
    [property: Key(5)] double? Metric,
    [property: Key(6)] double? Best,
    [property: Key(7)] int Rung,
    [property: Key(8)] int Attempt,
    [property: Key(9)] string? Reason,
    // the step Metric was measured at (the rows' Step is where the run is now)
    [property: Key(10)] long? MetricStep = null);

/// <summary>A metrics row of a trial's student (replica 0), from the run coordinator.</summary>
[MessagePackObject]
public sealed record TrialMetrics(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string RunId,
    [property: Key(2)] long Step,
    [property: Key(3)] string[] Names,
    [property: Key(4)] double[] Values) : ISweepCommand;

/// <summary>A trial's run ended (completed, failed or cancelled), from the run coordinator.</summary>
[MessagePackObject]
public sealed record TrialRunEnded(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string RunId,
    [property: Key(2)] RunState State,
    [property: Key(3)] long Steps,
    [property: Key(4)] double? Accuracy,
    [property: Key(5)] string? Message) : ISweepCommand;

/// <summary>A trial's run paused at its rung (the run coordinator to the sweep coordinator).</summary>
[MessagePackObject]
public sealed record TrialRunPaused(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string RunId,
    [property: Key(2)] long Step,
    [property: Key(3)] double? Accuracy,
    [property: Key(4)] string? StudentBlob = null,   // keys 4 and 5 came with PBT: the checkpoints at Step
    [property: Key(5)] string? SourceBlob = null) : ISweepCommand;
