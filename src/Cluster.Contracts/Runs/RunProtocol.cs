using MessagePack;

namespace Cluster.Contracts.Runs;

// The run coordinator's protocol: clients submit and query; entities report progress.

/// <summary>Submit a run spec (its YAML text). Answered with <see cref="RunAccepted"/> or <see cref="RunRejected"/>.</summary>
[MessagePackObject]
public sealed record SubmitRun(
    [property: Key(0)] string SpecYaml,
    [property: Key(1)] string SpecFile,
    [property: Key(2)] string? RunId,
    [property: Key(3)] string? SweepId = null,
    [property: Key(4)] long? HoldAt = null,
    [property: Key(5)] ForkPoint? Fork = null) : IRunCommand;   // key 5 came with PBT: the run begins from another run's checkpoints

/// <summary>
/// Where a run begins instead of step 0 (PBT's exploit): another run's student and source
/// checkpoints at student step Step, which the submitter has already put in each of the new run's
/// entities' own blob stores (the same bytes, so the same hashes). From names where they came
/// from, for messages (a run, a trial).
/// </summary>
[MessagePackObject]
public sealed record ForkPoint(
    [property: Key(0)] string From,
    [property: Key(1)] long Step,
    [property: Key(2)] string StudentBlob,
    [property: Key(3)] string? SourceBlob);

[MessagePackObject]
public sealed record RunAccepted([property: Key(0)] string RunId, [property: Key(1)] bool AlreadyKnown) : IRunCommand;

[MessagePackObject]
public sealed record RunRejected([property: Key(0)] string Reason) : IRunCommand;

/// <summary>Ask for one run (or every run when RunId is null). Answered with <see cref="RunStatusReport"/>.</summary>
[MessagePackObject]
public sealed record GetRunStatus([property: Key(0)] string? RunId) : IRunCommand;

[MessagePackObject]
public sealed record RunStatusReport([property: Key(0)] RunSummary[] Runs) : IRunCommand;

public enum RunState : byte { Submitted = 0, PreparingTeacher = 1, Training = 2, Completed = 3, Failed = 4, Cancelled = 5, Queued = 6, Paused = 7 }

public static class RunStates
{
    /// <summary>The state as status lines and status.json show it: "preparing_teacher", "training".</summary>
    public static string Name(this RunState s) => s == RunState.PreparingTeacher ? "preparing_teacher" : s.ToString().ToLowerInvariant();

    /// <summary>Completed, failed or cancelled: final.</summary>
    public static bool Ended(this RunState s) => s is RunState.Completed or RunState.Failed or RunState.Cancelled;
}

/// <summary>Cancel a run for good. Answered with <see cref="CancelAnswer"/> or <see cref="RunRejected"/> (no such run).</summary>
[MessagePackObject]
public sealed record CancelRun([property: Key(0)] string RunId, [property: Key(1)] string Reason) : IRunCommand;

/// <summary>The run's state after a cancel: Cancelled, or how it had ended before (Completed, Failed).</summary>
[MessagePackObject]
public sealed record CancelAnswer([property: Key(0)] string RunId, [property: Key(1)] RunState State, [property: Key(2)] bool AlreadyEnded) : IRunCommand;

/// <summary>
/// What `status` shows for a run: progress, accuracy and the pipeline's queue depths. Node names the
/// student's node, or its replicas' nodes ("host:port, host:port", in replica order).
/// </summary>
[MessagePackObject]
public sealed record RunSummary(
    [property: Key(0)] string RunId,
    [property: Key(1)] string Name,
    [property: Key(2)] string Method,
    [property: Key(3)] RunState State,
    [property: Key(4)] long StudentStep,
    [property: Key(5)] long TotalSteps,
    [property: Key(6)] long GeneratedBatches,
    [property: Key(7)] int PoolBatches,
    [property: Key(8)] int GeneratorQueue,
    [property: Key(9)] int StudentInFlight,
    [property: Key(10)] double? TeacherAccuracy,
    [property: Key(11)] double? StudentAccuracy,
    [property: Key(12)] string? Message,
    [property: Key(13)] string? Node,
    [property: Key(14)] string? GeneratorNode,
    [property: Key(15)] string? PausedStudentBlob = null,   // keys 15 and 16 came with PBT: a paused run's checkpoints at its pause
    [property: Key(16)] string? PausedSourceBlob = null);

/// <summary>The shard allocation asks where a run's entities should live. Answered with <see cref="RunLayout"/>.</summary>
[MessagePackObject]
public sealed record GetRunLayout([property: Key(0)] string RunId) : IRunCommand;

/// <summary>A run's spec layout: the node pool of each entity kind (null = any node; Students: one for all, or one per replica).</summary>
[MessagePackObject]
public sealed record RunLayout(
    [property: Key(0)] string RunId,
    [property: Key(1)] bool Known,
    [property: Key(2)] string? Generator,
    [property: Key(3)] string? Teacher,
    [property: Key(4)] string[] Students) : IRunCommand;

/// <summary>The shard allocation asks which runs hold a slot now (admitted, not paused, not ended). Answered with <see cref="BusyRuns"/>.</summary>
[MessagePackObject]
public sealed record GetBusyRuns : IRunCommand;

/// <summary>The runs that hold a slot: their shards are a node's load; shards of ended or paused runs are not.</summary>
[MessagePackObject]
public sealed record BusyRuns([property: Key(0)] string[] RunIds) : IRunCommand;

/// <summary>
/// A generator or student entity's progress, sent to the coordinator now and then; Message carries
/// what the run's status should show (a checkpoint that could not be loaded, a guard rollback).
/// A Step below 0 carries the message alone (<see cref="NewsOnly"/>): the sender's figures are not known.
/// </summary>
[MessagePackObject]
public sealed record EntityProgress(
    [property: Key(0)] string RunId,
    [property: Key(1)] string EntityId,
    [property: Key(2)] long Step,
    [property: Key(3)] long TotalSteps,
    [property: Key(4)] int Queue,
    [property: Key(5)] int PoolBatches,
    [property: Key(6)] double? Accuracy,
    [property: Key(7)] string Node,
    [property: Key(8)] string? Message,
    // a source's guard rollbacks over the run (from its journal); null from other entities
    [property: Key(9)] int? SourceRollbacks = null) : IRunCommand
{
    public const long NewsOnly = -1;
}

/// <summary>
/// The teacher entity has its trained teacher (stored as a content-addressed blob). Seconds and
/// FromCache say how it got it; null when a restarted entity reports a teacher it prepared before.
/// </summary>
[MessagePackObject]
public sealed record TeacherReady(
    [property: Key(0)] string RunId,
    [property: Key(1)] string TeacherBlob,
    [property: Key(2)] double Accuracy,
    [property: Key(3)] double? Seconds = null,
    [property: Key(4)] bool? FromCache = null) : IRunCommand;

/// <summary>Student replica 0 finished the run's last step.</summary>
[MessagePackObject]
public sealed record StudentFinished(
    [property: Key(0)] string RunId,
    [property: Key(1)] string EntityId,
    [property: Key(2)] double Accuracy,
    [property: Key(3)] double BestAccuracy,
    [property: Key(4)] long Steps,
    [property: Key(5)] string StudentBlob,
    [property: Key(6)] int Rollbacks,
    // Accuracy and BestAccuracy are on the validation split where the spec holds one out; this is the test set's
    [property: Key(7)] double? TestAccuracy = null) : IRunCommand;

/// <summary>An entity cannot go on (bad spec on this node, divergence beyond the guard, corrupt state with no fallback).</summary>
[MessagePackObject]
public sealed record EntityFailed(
    [property: Key(0)] string RunId,
    [property: Key(1)] string EntityId,
    [property: Key(2)] string Reason) : IRunCommand;

/// <summary>
/// Values an entity logged at one step (losses, learning rates, test accuracy), for the run's
/// metrics.csv, which the coordinator alone writes. Names and Values are parallel arrays.
/// Delivered at least once (<see cref="Report"/>): the entity journals it, sends it, and sends it
/// again until the coordinator acknowledges it.
/// </summary>
[MessagePackObject]
public sealed record RunMetrics(
    [property: Key(0)] string RunId,
    [property: Key(1)] string EntityId,
    [property: Key(2)] long Step,
    [property: Key(3)] string[] Names,
    [property: Key(4)] double[] Values,
    [property: Key(5)] ReportHeader? Report = null) : IRunCommand
{
    /// <summary>The parallel arrays from one set of named values.</summary>
    public static RunMetrics Of(string runId, string entityId, long step, IReadOnlyDictionary<string, double> values) =>
        new(runId, entityId, step, [.. values.Keys], [.. values.Values]);
}

/// <summary>A PNG grid of synthesised images at one step, for the run's samples/ directory; delivered as <see cref="RunMetrics"/> is.</summary>
[MessagePackObject]
public sealed record RunSamples(
    [property: Key(0)] string RunId,
    [property: Key(1)] string EntityId,
    [property: Key(2)] long Step,
    [property: Key(3)] byte[] Png,
    [property: Key(4)] ReportHeader? Report = null) : IRunCommand;

/// <summary>
/// Where a report stands in its entity's stream of reports (metrics rows and sample grids, one
/// numbering). Seq counts from 1 per entity and never repeats: it is journaled before the report is
/// sent. Previous is the entity's nearest earlier report that it still holds (0: none), so every
/// report between the two was acknowledged or given up (an entity holds a bounded number). MadeUnixMs
/// is when it was made and AgeSeconds how long ago that was when this copy was sent, both on the
/// entity's clock, so that a report sent again after an outage keeps its own time in metrics.csv.
/// </summary>
[MessagePackObject]
public sealed record ReportHeader(
    [property: Key(0)] long Seq,
    [property: Key(1)] long Previous,
    [property: Key(2)] long MadeUnixMs,
    [property: Key(3)] double AgeSeconds = 0);

/// <summary>
/// The coordinator has written (or knowingly skipped) every report of EntityId up to UpToSeq: the
/// entity may forget them. Missing: the report it was sent came after one it never had, so the
/// entity sends what it holds again.
/// </summary>
[MessagePackObject]
public sealed record ReportsReceived(
    [property: Key(0)] string RunId,
    [property: Key(1)] string EntityId,
    [property: Key(2)] long UpToSeq,
    [property: Key(3)] bool Missing = false) : IWireMessage;

/// <summary>Student replica 0 trained up to the run's pause step and saved a checkpoint there.</summary>
[MessagePackObject]
public sealed record StudentHeld(
    [property: Key(0)] string RunId,
    [property: Key(1)] string EntityId,
    [property: Key(2)] long Step,
    [property: Key(3)] double? Accuracy,
    [property: Key(4)] string? CheckpointBlob = null) : IRunCommand;   // key 4 came with PBT: the checkpoint at Step, in the replica's own store

/// <summary>A paused run goes on to HoldAt (null: to its end). Idempotent; a run not paused is left as it is.</summary>
[MessagePackObject]
public sealed record ResumeRun([property: Key(0)] string RunId, [property: Key(1)] long? HoldAt) : IRunCommand;
