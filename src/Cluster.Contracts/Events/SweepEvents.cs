using Cluster.Contracts.Sweeps;
using MessagePack;

namespace Cluster.Contracts.Events;

// The sweep coordinator's journal. A sweep's searcher and scheduler are rebuilt from these: the
// configurations made (TrialCreated, in order) and the reports decided (TrialReported, in order,
// with the decision taken), so that a sweep resumed after a crash goes on as it would have.

[MessagePackObject]
public sealed record SweepSubmitted(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string SpecYaml,
    [property: Key(2)] string SpecFile,
    [property: Key(3)] DateTime SubmittedUtc,
    [property: Key(4)] bool Maximize) : IPersistedEvent;

/// <summary>The searcher made configuration Index; this is its trial for one repeat (pending until launched).</summary>
[MessagePackObject]
public sealed record TrialCreated(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string TrialId,
    [property: Key(2)] long Index,
    [property: Key(3)] int Repeat,
    [property: Key(4)] string[] Values) : ITrialEvent;

/// <summary>A trial's run was submitted (attempt 1, or again after a failure).</summary>
[MessagePackObject]
public sealed record TrialLaunched(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string TrialId,
    [property: Key(2)] string RunId,
    [property: Key(3)] int Attempt,
    [property: Key(4)] long? HoldAt = null) : ITrialEvent;   // the step its run pauses at (ASHA with promotions)

/// <summary>A report the scheduler decided, and what it decided.</summary>
[MessagePackObject]
public sealed record TrialReported(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string TrialId,
    [property: Key(2)] long Step,
    [property: Key(3)] double Value,
    [property: Key(4)] bool Stop,
    [property: Key(5)] string Reason,
    [property: Key(6)] int Rung) : ITrialEvent;

/// <summary>A trial's run ended: completed, failed for good, or cancelled (a trial the scheduler stopped stays Stopped).</summary>
[MessagePackObject]
public sealed record TrialEnded(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string TrialId,
    [property: Key(2)] TrialState State,
    [property: Key(3)] long Steps,
    [property: Key(4)] double? Metric,
    [property: Key(5)] string? Reason) : ITrialEvent;

[MessagePackObject]
public sealed record SweepEnded(
    [property: Key(0)] string SweepId,
    [property: Key(1)] SweepState State,
    [property: Key(2)] string? Reason,
    [property: Key(3)] DateTime EndedUtc) : IPersistedEvent;

/// <summary>
/// A trial's run paused at ASHA rung Rung (or a PBT interval) with the metric Value there;
/// StudentBlob and SourceBlob: its checkpoints at Step, kept in the sweep's store for PBT's exploits.
/// </summary>
[MessagePackObject]
public sealed record TrialPaused(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string TrialId,
    [property: Key(2)] long Step,
    [property: Key(3)] double Value,
    [property: Key(4)] int Rung,
    [property: Key(5)] string? StudentBlob = null,   // keys 5 and 6 came with PBT
    [property: Key(6)] string? SourceBlob = null) : ITrialEvent;

/// <summary>
/// PBT's exploit and explore: a paused trial goes on as a new run (RunId) that begins from trial
/// From's checkpoints at Step, with the perturbed configuration Values, to its next pause (HoldAt).
/// </summary>
[MessagePackObject]
public sealed record TrialExploited(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string TrialId,
    [property: Key(2)] string From,
    [property: Key(3)] long Step,
    [property: Key(4)] string[] Values,
    [property: Key(5)] string RunId,
    [property: Key(6)] long? HoldAt,
    [property: Key(7)] string StudentBlob,
    [property: Key(8)] string? SourceBlob,
    [property: Key(9)] string Reason) : ITrialEvent;

/// <summary>A paused trial goes on: to its next rung (HoldAt), or to its end (null).</summary>
[MessagePackObject]
public sealed record TrialPromoted(
    [property: Key(0)] string SweepId,
    [property: Key(1)] string TrialId,
    [property: Key(2)] long? HoldAt,
    [property: Key(3)] string Reason) : ITrialEvent;
