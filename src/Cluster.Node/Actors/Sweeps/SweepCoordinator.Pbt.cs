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

/// <summary>PBT's checkpoints: copied for an exploit before it is journalled, dropped with their trial, and the runs an exploit replaced cancelled again after a crash.</summary>
public sealed partial class SweepCoordinator
{
    /// <summary>
    /// Each exploit's source checkpoints are copied into the exploiting trial's store before it is
    /// journalled; one that cannot be copied becomes a trial going on as it is, with the reason.
    /// </summary>
    private List<IPersistedEvent> Exploitable(SweepRecord r, List<IPersistedEvent> events)
    {
        for (var i = 0; i < events.Count; i++)
        {
            if (events[i] is not TrialExploited x) continue;
            try { checkpoints.Take(r.SweepId, x.From, x.TrialId, new ForkPoint(x.From, x.Step, x.StudentBlob, x.SourceBlob)); }
            catch (Exception e) when (e is BlobException or IOException or UnauthorizedAccessException)
            {
                var pbt = (PbtScheduler)Runtime(r).Scheduler;
                events[i] = new TrialPromoted(r.SweepId, x.TrialId, pbt.HoldAfter(r.Trial(x.TrialId)!.Step),
                    $"{x.Reason}; but {x.From}'s checkpoints could not be copied ({e.Message}): goes on as it is");
            }
        }
        return events;
    }

    /// <summary>
    /// The run a PBT exploit replaced is cancelled when the exploit is journalled; a coordinator
    /// that died in between left it paused: every live forked trial's previous runs are cancelled
    /// again on recovery (idempotent; a run that ended or never existed is left as it is).
    /// </summary>
    private void CancelReplacedRuns()
    {
        foreach (var r in state.Sweeps.Values.Where(s => s.Running))
        {
            var attempts = Runtime(r).Spec.Limits.MaxFailures + 1;
            foreach (var t in r.Trials.Where(t => t.Live && t.Generation > 0))
                for (var a = 1; a <= attempts; a++)
                    services.Coordinator.Tell(new CancelRun(SweepDecisions.RunId(r.SweepId, t.TrialId, a, t.Generation - 1),
                        $"PBT: trial {t.TrialId} goes on as run {t.RunId}"));
        }
    }

    private void DropCheckpoints(string sweepId, string trialId)
    {
        try { checkpoints.Drop(sweepId, trialId); }
        catch (IOException e) { log.Warning("sweep {0}: trial {1}'s kept checkpoints not deleted: {2}", sweepId, trialId, e.Message); }
    }
}
