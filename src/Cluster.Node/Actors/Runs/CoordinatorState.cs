using System.Collections.Immutable;
using Cluster.Contracts;
using Cluster.Contracts.Events;

namespace Cluster.Node.Actors;

/// <summary>The coordinator's persisted state: every run it accepted and how it ended. Pure.</summary>
public sealed record CoordinatorState(ImmutableSortedDictionary<string, RunRecord> Runs)
{
    public static readonly CoordinatorState Empty = new(ImmutableSortedDictionary<string, RunRecord>.Empty);

    public CoordinatorState Apply(IPersistedEvent e) => e switch
    {
        RunSubmitted s => Submitted(s),
        RunTeacherReady t => Update(t.RunId, r => r with { TeacherBlob = t.TeacherBlob, TeacherAccuracy = t.Accuracy, TeacherSeconds = t.Seconds, TeacherFromCache = t.FromCache }),
        RunCompleted c => Update(c.RunId, r => r with { Completed = true, Accuracy = c.Accuracy, BestAccuracy = c.BestAccuracy, Steps = c.Steps, CompletedUtc = c.CompletedUtc }),
        RunAdmitted a => Update(a.RunId, r => r with { Queued = false }),
        RunPaused p => Update(p.RunId, r => r with { Paused = true, Steps = p.Step, PausedStudentBlob = p.StudentBlob, PausedSourceBlob = p.SourceBlob }),
        RunResumed x => Update(x.RunId, r => r with { Paused = false, Queued = true, HoldAt = x.HoldAt }),
        RunFailed f => Update(f.RunId, r => r with { Failed = true, Message = f.Reason }),
        RunCancelled c => Update(c.RunId, r => r with { Cancelled = true, Message = $"cancelled: {c.Reason}", CompletedUtc = c.CancelledUtc }),
        _ => throw new ArgumentException($"{e.GetType().Name} is not a coordinator event"),
    };

    /// <summary>A run, and its baseline's run where the event carries one.</summary>
    private CoordinatorState Submitted(RunSubmitted s)
    {
        var runs = Runs.SetItem(s.RunId, new RunRecord(s.RunId, s.SpecYaml, s.SpecFile, s.SubmittedUtc, null, null, false, false, null, null, 0, null, null,
            SweepId: s.SweepId, Queued: s.Queued, HoldAt: s.HoldAt, Fork: s.Fork));
        if (s.BaselineYaml is { } baseline)
        {
            var id = Distill.Engine.Runs.RunIds.Baseline(s.RunId);
            runs = runs.SetItem(id, new RunRecord(id, baseline, s.SpecFile, s.SubmittedUtc, null, null, false, false, null, null, 0, null, null,
                Queued: s.Queued, BaselineOf: s.RunId));
        }
        return new(runs);
    }

    private CoordinatorState Update(string runId, Func<RunRecord, RunRecord> f) =>
        Runs.TryGetValue(runId, out var r) ? new(Runs.SetItem(runId, f(r))) : this;

    public IEnumerable<RunRecord> Active => Runs.Values.Where(r => r.Active);

    public CoordinatorSnapshot ToSnapshot() => new(Runs.Values.ToArray());

    public static CoordinatorState FromSnapshot(CoordinatorSnapshot s) => new(s.Runs.ToImmutableSortedDictionary(r => r.RunId, r => r));
}
