using Cluster.Contracts.Runs;
using MessagePack;

namespace Cluster.Contracts.Events;

// Journal events and snapshot states. Large state (weights, optimiser moments, image batches)
// lives in content-addressed blob files; events hold the hash, which is verified on load.

[MessagePackObject]
public sealed record RunSubmitted(
    [property: Key(0)] string RunId,
    [property: Key(1)] string SpecYaml,
    [property: Key(2)] string SpecFile,
    [property: Key(3)] DateTime SubmittedUtc,
    [property: Key(4)] string? SweepId = null,   // key 4 came with sweeps
    [property: Key(5)] bool Queued = false,   // key 5 came with admission control: older runs started at once
    [property: Key(6)] long? HoldAt = null,   // key 6 came with ASHA's promotions: the step the run pauses at
    [property: Key(7)] Runs.ForkPoint? Fork = null,   // key 7 came with PBT: the checkpoints it begins from
    // compare_baseline's student alone, submitted in the same event as its run's own (RunIds.Baseline)
    [property: Key(8)] string? BaselineYaml = null) : IPersistedEvent;

[MessagePackObject]
public sealed record RunTeacherReady(
    [property: Key(0)] string RunId,
    [property: Key(1)] string TeacherBlob,
    [property: Key(2)] double Accuracy,
    [property: Key(3)] double? Seconds = null,      // keys 3 and 4 came in session 9: older journals lack them
    [property: Key(4)] bool? FromCache = null) : IPersistedEvent;

[MessagePackObject]
public sealed record RunCompleted(
    [property: Key(0)] string RunId,
    [property: Key(1)] double Accuracy,
    [property: Key(2)] double BestAccuracy,
    [property: Key(3)] long Steps,
    [property: Key(4)] string StudentBlob,
    [property: Key(5)] DateTime CompletedUtc) : IPersistedEvent;

[MessagePackObject]
public sealed record RunFailed([property: Key(0)] string RunId, [property: Key(1)] string Reason) : IPersistedEvent;

/// <summary>A queued run got a slot on a GPU node: its entities start.</summary>
[MessagePackObject]
public sealed record RunAdmitted([property: Key(0)] string RunId, [property: Key(1)] DateTime AdmittedUtc) : IPersistedEvent;

/// <summary>A user cancelled the run (`cancel`): final, like a failure, and never resumed.</summary>
[MessagePackObject]
public sealed record RunCancelled([property: Key(0)] string RunId, [property: Key(1)] string Reason, [property: Key(2)] DateTime CancelledUtc) : IPersistedEvent;

/// <summary>The coordinator's state as a snapshot.</summary>
[MessagePackObject]
public sealed record CoordinatorSnapshot([property: Key(0)] RunRecord[] Runs) : IPersistedEvent;

[MessagePackObject]
public sealed record RunRecord(
    [property: Key(0)] string RunId,
    [property: Key(1)] string SpecYaml,
    [property: Key(2)] string SpecFile,
    [property: Key(3)] DateTime SubmittedUtc,
    [property: Key(4)] string? TeacherBlob,
    [property: Key(5)] double? TeacherAccuracy,
    [property: Key(6)] bool Completed,
    [property: Key(7)] bool Failed,
    [property: Key(8)] double? Accuracy,
    [property: Key(9)] double? BestAccuracy,
    [property: Key(10)] long Steps,
    [property: Key(11)] string? Message,
    [property: Key(12)] DateTime? CompletedUtc,
    [property: Key(13)] double? TeacherSeconds = null,   // keys 13 and 14 came in session 9
    [property: Key(14)] bool? TeacherFromCache = null,
    [property: Key(15)] bool Cancelled = false,         // key 15 came in session 10
    [property: Key(16)] string? SweepId = null,         // key 16 came with sweeps: the sweep a trial's run belongs to
    [property: Key(17)] bool Queued = false,            // key 17 came with admission control: waiting for a slot
    [property: Key(18)] long? HoldAt = null,            // keys 18 and 19 came with ASHA's promotions: the step it pauses at,
    [property: Key(19)] bool Paused = false,            // and whether it is paused there (its slot free, its state kept)
    [property: Key(20)] Runs.ForkPoint? Fork = null,    // keys 20-22 came with PBT: the checkpoints it begins from,
    [property: Key(21)] string? PausedStudentBlob = null,   // and those at its pause (RunPaused's)
    [property: Key(22)] string? PausedSourceBlob = null,
    [property: Key(23)] string? BaselineOf = null)      // the run whose compare_baseline this run trains
{
    /// <summary>Neither completed, failed nor cancelled: its entities are (re)started and its reports count.</summary>
    [IgnoreMember] public bool Active => !Completed && !Failed && !Cancelled;
}

/// <summary>An entity joined a run (its spec travels with it, so that it can rebuild itself alone).</summary>
[MessagePackObject]
public sealed record EntityStarted(
    [property: Key(0)] string RunId,
    [property: Key(1)] string SpecYaml,
    [property: Key(2)] string? TeacherBlob) : IPersistedEvent;

/// <summary>
/// A synthesised batch is in the pool, journaled before anyone sees it: the names (SHA-256) of its
/// images, of the soft labels it was first sent with, so that a batch served again after a failover
/// is the same batch with the same labels (null in journals from before labels were kept, and for a
/// method that uses none), and of the data's true labels (TrueLabelsBlob) when it has them. Its
/// blobs are written before this event, except where Held: the source keeps a batch it can make
/// again in memory and writes it only when memory runs short, so after a restart a held batch's
/// blobs may be missing, and it is made again.
/// </summary>
[MessagePackObject]
public sealed record BatchStored(
    [property: Key(0)] long Seq,
    [property: Key(1)] string Blob,
    [property: Key(2)] string? LabelsBlob = null,
    [property: Key(3)] string? TrueLabelsBlob = null,
    [property: Key(4)] bool Held = false) : IPersistedEvent;

/// <summary>Batches up to UpToSeq are covered by every student's checkpoint and left the pool.</summary>
[MessagePackObject]
public sealed record BatchesReleased([property: Key(0)] long UpToSeq) : IPersistedEvent;

/// <summary>A checkpoint of an entity's engine state (weights, optimiser, RNG, step).</summary>
[MessagePackObject]
public sealed record CheckpointWritten(
    [property: Key(0)] long Step,
    [property: Key(1)] long Seq,
    [property: Key(2)] string Blob,
    [property: Key(3)] double? Accuracy,
    [property: Key(4)] double BestAccuracy,
    // the test set at the last step, where evaluations during training use a validation split
    [property: Key(5)] double? TestAccuracy = null,
    // a source's state after a guard rollback: kept for good, since replay from before it would miss the rollback
    [property: Key(6)] bool Rollback = false) : IPersistedEvent;

/// <summary>
/// A metrics row or a sample grid (exactly one of the two) that the entity will send until the
/// coordinator acknowledges it: journaled first, so that an outage of the coordinator, or the
/// entity's own restart, loses none. Acknowledgements are not journaled (a report sent again is
/// one the coordinator knows and skips).
/// </summary>
[MessagePackObject]
public sealed record ReportQueued(
    [property: Key(0)] RunMetrics? Metrics,
    [property: Key(1)] RunSamples? Samples) : IPersistedEvent
{
    [IgnoreMember]
    public ReportHeader Header => Metrics?.Report ?? Samples?.Report ?? throw new InvalidOperationException("a queued report without its header");
}

/// <summary>The small state of a generator or student entity, as an Akka snapshot that bounds journal replay.</summary>
[MessagePackObject]
public sealed record EntitySnapshot(
    [property: Key(0)] string? RunId,
    [property: Key(1)] string? SpecYaml,
    [property: Key(2)] string? TeacherBlob,
    [property: Key(3)] BatchStored[] Pool,
    [property: Key(4)] long ReleasedUpTo,
    [property: Key(5)] CheckpointWritten[] Checkpoints,
    [property: Key(6)] bool Finished,
    [property: Key(7)] long? HoldAt = null,   // key 7 came with ASHA's promotions
    [property: Key(8)] ReportQueued[]? Reports = null,   // keys 8 and 9 came with the reports' delivery: those not yet acknowledged
    [property: Key(9)] long LastReport = 0) : IPersistedEvent;

/// <summary>The entity's run is over (it will not be started again by remember-entities).</summary>
[MessagePackObject]
public sealed record EntityFinished([property: Key(0)] long Step) : IPersistedEvent;

/// <summary>A run reached the step it was to pause at: its entities keep their state, its slot is free.</summary>
[MessagePackObject]
public sealed record RunPaused(
    [property: Key(0)] string RunId,
    [property: Key(1)] long Step,
    [property: Key(2)] double? Accuracy,
    [property: Key(3)] string? StudentBlob = null,   // keys 3 and 4 came with PBT: the checkpoints at Step (student replica 0's, the source's)
    [property: Key(4)] string? SourceBlob = null) : IPersistedEvent;

/// <summary>A paused run goes on (queued for a slot) to its next pause, or to its end (HoldAt null).</summary>
[MessagePackObject]
public sealed record RunResumed([property: Key(0)] string RunId, [property: Key(1)] long? HoldAt) : IPersistedEvent;

/// <summary>An entity's pause step: it trains up to it and waits there (null: no pause).</summary>
[MessagePackObject]
public sealed record EntityHold([property: Key(0)] long? Step) : IPersistedEvent;
