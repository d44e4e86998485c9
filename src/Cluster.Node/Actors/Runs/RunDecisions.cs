using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Runs;
using Distill.Engine.Runs;
using Distill.Engine.Specs;

namespace Cluster.Node.Actors;

/// <summary>
/// What the run coordinator decides, as pure functions of its <see cref="CoordinatorState"/> and a
/// command: the events to persist (none: nothing changes) and the answer to give. The actor only
/// persists, applies and carries out; these are tested without one.
/// </summary>
public static class RunDecisions
{
    public sealed record Decision(IPersistedEvent? Event, IRunCommand? Reply)
    {
        public static readonly Decision Nothing = new(null, null);
    }

    /// <summary>
    /// A new run, or the same one again. <paramref name="priorWork"/> says what a run's directory
    /// already holds: a run this journal has no record of, whose directory holds another run's work,
    /// means the journal was lost or replaced, and starting over would mix the two. A spec with
    /// compare_baseline brings its baseline's run in the same event (a sweep's trials skip it),
    /// whose id must be free as well.
    /// </summary>
    public static Decision Submit(CoordinatorState state, SubmitRun m, Func<RunSpec> parse, DateTime now, Func<string, string?>? priorWork = null)
    {
        RunSpec spec;
        try { spec = parse(); }
        catch (SpecException e) { return new(null, new RunRejected($"spec refused: {e.Message}")); }
        var withBaseline = spec.CompareBaseline && m.SweepId is null;
        bool Taken(string id) => state.Runs.ContainsKey(id) || priorWork?.Invoke(id) is not null;
        var runId = m.RunId;
        if (runId is not null)
        {
            if (EntityId.RunIdProblem(runId) is { } problem) return new(null, new RunRejected(problem));
            if (state.Runs.TryGetValue(runId, out var known))
                return known.SpecYaml != m.SpecYaml
                    ? new(null, new RunRejected($"run {runId} exists with a different spec{SpecDiff.Describe(known.SpecYaml, m.SpecYaml)}; choose another run id"))
                    : new(null, new RunAccepted(runId, AlreadyKnown: true));
            if (priorWork?.Invoke(runId) is { } work)
                return new(null, new RunRejected(
                    $"run {runId}: its directory already holds a run's work ({work}), but this journal has no record of the run: " +
                    "the journal was lost or replaced, or the id was used with another database. Restore the journal, or choose another run id"));
            if (withBaseline && EntityId.RunIdProblem(RunIds.Baseline(runId)) is not null)
                return new(null, new RunRejected($"run id '{runId}' is too long for compare_baseline's run {RunIds.Baseline(runId)}: choose a shorter one"));
            if (withBaseline && Taken(RunIds.Baseline(runId)))
                return new(null, new RunRejected($"run {RunIds.Baseline(runId)}, compare_baseline's run of {runId}, exists already; choose another run id"));
        }
        else
        {
            do runId = RunIds.New(spec.Name, now);
            while (Taken(runId) || (withBaseline && Taken(RunIds.Baseline(runId))));
        }
        var baseline = withBaseline ? SpecParser.Write(spec.Baseline()) : null;
        return new(new RunSubmitted(runId, m.SpecYaml, m.SpecFile, now, m.SweepId, Queued: true, HoldAt: m.HoldAt, Fork: m.Fork, BaselineYaml: baseline),
            new RunAccepted(runId, AlreadyKnown: false));
    }

    /// <summary>A run that ended other than completed takes its baseline's run with it (cancelled, with the reason); nothing else does.</summary>
    public static RunCancelled? BaselineEnds(CoordinatorState state, string runId, DateTime now) =>
        state.Runs.TryGetValue(runId, out var r) && !r.Active && !r.Completed
        && state.Runs.TryGetValue(RunIds.Baseline(runId), out var b) && b.BaselineOf == runId && b.Active
            ? new RunCancelled(b.RunId, $"its run {runId} {(r.Failed ? "failed" : "was cancelled")}", now)
            : null;

    /// <summary>
    /// What a run still going waits for when no node that is up hosts one of the entity kinds it
    /// needs (a seed alone, or GPU nodes that host other kinds only); null when every kind has a node.
    /// </summary>
    /// <param name="left">GPU nodes that left the cluster lately (downed while unreachable, or stopped), and how long ago</param>
    public static string? Waiting(RunSpec spec, IReadOnlySet<string> hostedKinds, IReadOnlyDictionary<string, TimeSpan>? left = null)
    {
        var needed = spec.Method.UsesTeacher ? EntityKinds.All : [EntityKinds.Generator, EntityKinds.Student];
        var missing = needed.Where(k => !hostedKinds.Contains(k)).ToArray();
        if (missing.Length == 0) return null;
        // a node that froze (a long pause, a suspended VM) is downed and joins again by itself: say so before telling anyone to start one
        var lately = left is { Count: > 0 }
            ? $"; {string.Join(", ", left.OrderBy(x => x.Value).Select(x => $"{x.Key} left {x.Value.TotalSeconds:F0} s ago"))} (a node that left joins again by itself if it still runs)"
            : "";
        return $"waiting: no node that is up hosts {string.Join(", ", missing)}{lately}; " +
               $"start a GPU node (Cluster.GpuNode join --seeds ...{(hostedKinds.Count > 0 ? " --hosts " + string.Join(',', missing) : "")})";
    }

    /// <summary>The teacher is ready: recorded once, for a run still going.</summary>
    public static Decision TeacherReady(CoordinatorState state, TeacherReady m) =>
        state.Runs.TryGetValue(m.RunId, out var r) && r.Active && r.TeacherBlob is null
            ? new(new RunTeacherReady(m.RunId, m.TeacherBlob, m.Accuracy, m.Seconds, m.FromCache), null)
            : Decision.Nothing;

    /// <summary>The student finished: the run completes, unless it has ended already (a failed or cancelled run stays so).</summary>
    public static Decision StudentFinished(CoordinatorState state, StudentFinished m, DateTime now) =>
        state.Runs.TryGetValue(m.RunId, out var r) && r.Active
            ? new(new RunCompleted(m.RunId, m.Accuracy, m.BestAccuracy, m.Steps, m.StudentBlob, now), null)
            : Decision.Nothing;

    /// <summary>An entity cannot go on: the run fails with its reason, once.</summary>
    public static Decision EntityFailed(CoordinatorState state, EntityFailed m) =>
        state.Runs.TryGetValue(m.RunId, out var r) && r.Active
            ? new(new RunFailed(m.RunId, $"{m.EntityId}: {m.Reason}"), null)
            : Decision.Nothing;

    /// <summary>
    /// Student replica 0 reached the run's pause step: the run pauses there, once, keeping where its
    /// checkpoints at that step are (the student's, and the source's when it wrote one there).
    /// </summary>
    public static Decision Held(CoordinatorState state, StudentHeld m, string? sourceBlob = null) =>
        state.Runs.TryGetValue(m.RunId, out var r) && r.Active && !r.Paused && !r.Queued && r.HoldAt == m.Step
            ? new(new RunPaused(m.RunId, m.Step, m.Accuracy, m.CheckpointBlob, sourceBlob), null)
            : Decision.Nothing;

    /// <summary>A paused run goes on to its next pause (or its end): queued for a slot again.</summary>
    public static Decision Resume(CoordinatorState state, ResumeRun m) =>
        state.Runs.TryGetValue(m.RunId, out var r) && r.Active && r.Paused && (m.HoldAt is null || m.HoldAt > r.HoldAt)
            ? new(new RunResumed(m.RunId, m.HoldAt), null)
            : Decision.Nothing;

    /// <summary>A user cancels: final for a run still going; a run that has ended says how.</summary>
    public static Decision Cancel(CoordinatorState state, CancelRun m, DateTime now)
    {
        if (!state.Runs.TryGetValue(m.RunId, out var r)) return new(null, new RunRejected($"no run '{m.RunId}'"));
        if (!r.Active) return new(null, new CancelAnswer(m.RunId, StateOf(r), AlreadyEnded: true));
        // the reason is shown on one line wherever it goes (status, events.log)
        return new(new RunCancelled(m.RunId, Distill.Engine.Runs.RunDirectory.OneLine(m.Reason), now), new CancelAnswer(m.RunId, RunState.Cancelled, AlreadyEnded: false));
    }

    /// <summary>usesTeacher: whether the run's method has a teacher to prepare first.</summary>
    public static RunState StateOf(RunRecord r, bool usesTeacher = true) =>
        r.Completed ? RunState.Completed : r.Failed ? RunState.Failed : r.Cancelled ? RunState.Cancelled
        : r.Paused ? RunState.Paused : r.Queued ? RunState.Queued
        : usesTeacher && r.TeacherBlob is null ? RunState.PreparingTeacher : RunState.Training;

    /// <summary>
    /// Admission: queued runs get the free slots, oldest first. A slot is one run's place on a GPU
    /// node (`Cluster.GpuNode join --slots N`, one per GPU by default); null slots: no limit (a
    /// coordinator outside a cluster). A run admitted keeps its slot until it ends.
    /// </summary>
    public static IReadOnlyList<RunAdmitted> Admit(CoordinatorState state, int? slots, DateTime now)
    {
        var active = state.Active.ToArray();
        var free = slots is { } n ? n - active.Count(HoldsSlot) : int.MaxValue;
        return free <= 0 ? []
            : active.Where(r => r.Queued && !r.Paused).OrderBy(r => r.SubmittedUtc).ThenBy(r => r.RunId, StringComparer.Ordinal)
                .Take(free).Select(r => new RunAdmitted(r.RunId, now)).ToArray();
    }

    /// <summary>A run holds a slot while admitted and not paused (a paused run keeps its state, not its slot).</summary>
    public static bool HoldsSlot(RunRecord r) => r.Active && !r.Queued && !r.Paused;

    /// <summary>What status says of a queued run: its place and the slots.</summary>
    public static string QueuedMessage(CoordinatorState state, RunRecord r, int? slots)
    {
        var queue = state.Active.Where(x => x.Queued && !x.Paused).OrderBy(x => x.SubmittedUtc).ThenBy(x => x.RunId, StringComparer.Ordinal).ToList();
        var busy = state.Active.Count(HoldsSlot);
        return $"queued: {queue.FindIndex(x => x.RunId == r.RunId) + 1} of {queue.Count} waiting for a slot ({busy} of {slots?.ToString() ?? "unlimited"} slots busy)";
    }
}
