using Akka.Actor;
using Akka.Event;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Storage;
using Distill.Engine.Specs;
using Distill.Engine.Sweeps;

namespace Cluster.Node.Actors;

/// <summary>Every 5 s, what the run coordinator says of the running trials' runs catches up reports, pauses, ends and submits lost in a failover; and the status summary.</summary>
public sealed partial class SweepCoordinator
{
    private void OnTick()
    {
        foreach (var r in state.Sweeps.Values.Where(s => s.Running))
        {
            foreach (var t in r.Trials.Where(t => t.State is TrialState.Running or TrialState.Stopped && t.RunId is not null))
            {
                if (t.State == TrialState.Stopped && t.EndRecorded) continue;
                var runId = t.RunId!;
                services.Coordinator.Ask<object>(new GetRunStatus(runId), TimeSpan.FromSeconds(10))
                    .PipeTo(Self, success: a => new RunChecked(runId, a), failure: x => new RunChecked(runId, x));
            }
            Advance(r.SweepId);
        }
    }

    private void OnRunChecked(RunChecked c)
    {
        if (!state.ByRun.TryGetValue(c.RunId, out var at) || state.Sweeps[at.SweepId].Trial(at.TrialId) is not { } t || t.RunId != c.RunId) return;
        var r = state.Sweeps[at.SweepId];
        switch (c.Answer)
        {
            case RunStatusReport { Runs.Length: 0 } when t.State == TrialState.Running:
                // the submit never arrived (the run coordinator was failing over): again (idempotent)
                SubmitTrial(r, t.TrialId);
                break;
            case RunStatusReport { Runs: [var s, ..] }:
                liveSteps[c.RunId] = s.StudentStep;
                if (s.State == RunState.Queued) queuedRuns.Add(c.RunId);
                else queuedRuns.Remove(c.RunId);
                if (SweepDecisions.NotStarted(r, Runtime(r), t, s.State, DateTime.UtcNow) is { } notStarted)
                {
                    // a budget was spent while its run waited for a slot: it never starts
                    Record([notStarted], () =>
                    {
                        services.Coordinator.Tell(new CancelRun(c.RunId, notStarted.Reason!));
                        Advance(r.SweepId);
                    });
                    break;
                }
                if (t.State == TrialState.Running && s.State == RunState.Paused)
                {
                    // a pause or a promotion lost on the way (a coordinator failing over): again, both are idempotent
                    if (t.HoldAt == s.StudentStep) OnRunPaused(c.RunId, s.StudentStep, s.StudentAccuracy, s.PausedStudentBlob, s.PausedSourceBlob);
                    else services.Coordinator.Tell(new ResumeRun(c.RunId, t.HoldAt));
                }
                else if (t.State == TrialState.Stopped && !s.State.Ended())
                    services.Coordinator.Tell(new CancelRun(c.RunId, $"stopped by the scheduler: {t.Reason}"));
                else if (s.State.Ended())
                    OnRunEnded(c.RunId, s.State, s.StudentStep, s.StudentAccuracy, s.Message);
                break;
        }
    }

    private SweepSummary Summary(SweepRecord r)
    {
        SweepRuntime? rt = null;
        try { rt = Runtime(r); }
        catch (SpecException) { }
        return SweepDecisions.Summary(r, rt, liveSteps, queuedRuns);
    }
}
