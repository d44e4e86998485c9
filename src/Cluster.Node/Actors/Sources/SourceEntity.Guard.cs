using Akka.Actor;
using Akka.Event;
using Cluster.Contracts.Events;
using Cluster.Contracts.Runs;
using Cluster.Node.Hosting;
using Cluster.Node.Telemetry;
using Distill.Engine.Methods;
using static Cluster.Node.Actors.SourceJobs;

namespace Cluster.Node.Actors;

/// <summary>
/// The divergence guard on a learning source's own metrics (<see cref="DivergenceGuard.CheckStep"/>
/// on every batch that carries them: the engine loop's metric steps and every guard.check_every-th): a generator that collapses (the
/// teacher sees fewer than guard.min_classes classes in its batch) or whose metrics are not finite
/// goes back to what it had learned at its newest checkpoint before the last batch that passed,
/// or at a later rollback's (else to its initial weights), with its learning rate multiplied by guard.lr_factor, and makes
/// the next batch from there. Its step and random stream go on, so batch numbers stay in order.
/// The batch that failed and those before it since the last check stay in the stream; the student
/// is not rolled back, since the generator does not depend on it. The failed batch and the state
/// after the rollback are journaled together (one write), the latter as a checkpoint kept for the
/// run's life, so that a restart and a batch made again replay from it, never across it. After
/// guard.max_rollbacks (counted over the run, from the journal) the run fails with the reason.
/// </summary>
public sealed partial class SourceEntity
{
    /// <summary>Null: the guard is off, or the source learns nothing across batches (going back would change nothing).</summary>
    private DivergenceGuard? guard;
    /// <summary>The last batch whose metrics passed the guard (<see cref="SourceDecisions.LastHealthy"/>).</summary>
    private long lastHealthy;
    private int rollbacks;
    /// <summary>The batch that failed the guard while the source goes back (nothing new starts meanwhile, even after a failure).</summary>
    private long? goingBack;

    private void StartGuard(bool canRollBack)
    {
        guard = spec!.Guard.Enabled && canRollBack ? new DivergenceGuard(spec.Guard) : null;
        lastHealthy = SourceDecisions.LastHealthy(State.Produced, spec.Guard.CheckEvery, State.Checkpoints);
        rollbacks = State.Checkpoints.Count(c => c.Rollback);
    }

    /// <summary>The guard's reason when batch s failed it (null: healthy, or not checked).</summary>
    private string? Unhealthy(Made s)
    {
        if (guard is null || s.Metrics is not { } m) return null;
        if (guard.CheckStep(m) is { Healthy: false } v) return v.Reason;
        // as the engine loop's good state: only a check_every-th batch marks where a rollback goes back to
        if (s.Seq % spec!.Guard.CheckEvery == 0) lastHealthy = s.Seq;
        return null;
    }

    /// <summary>Holds batch seq, the newest unstored, until the source has gone back; or stores it and fails the run.</summary>
    private void GoBack(long seq, string reason)
    {
        // busy stays set: nothing new starts until the rolled-back state is journaled
        busy = true;
        if (!DivergenceGuard.MayRollBack(spec!.Guard, rollbacks))
        {
            StoreGroup();
            ReportFailure($"source: guard: {reason} at batch {seq}" + (rollbacks > 0 ? $"; gave up after {rollbacks} rollbacks" : " (guard.max_rollbacks is 0)"));
            return;
        }
        goingBack = seq;
        var target = SourceDecisions.RollbackTarget(State.Checkpoints, lastHealthy, plan!.UnitsPerBatch);
        var (src, own, sp, data, t) = (source!, OwnBlobs, spec, Services.Data(spec.Data), teacher);
        EngineAccess.Compute(Self, () => RollBack(src, seq, target, own, sp, data, t, reason),
            failure: e => new RolledBack(seq, null, $"{reason}; going back failed: {e.Message}", ""));
    }

    /// <summary>Journals the held batches with the rollback's checkpoint, then goes on.</summary>
    private void OnRolledBack(RolledBack r)
    {
        if (r.Checkpoint is null)
        {
            goingBack = null;   // busy stays set: the run has failed
            StoreGroup();
            ReportFailure($"source: guard: {r.Reason} at batch {r.Seq}");
            return;
        }
        var blob = OwnBlobs.Put(r.Checkpoint);
        var old = State.Checkpoints;
        StoreGroup(new CheckpointWritten(r.Seq * plan!.UnitsPerBatch, r.Seq, blob, null, 0, Rollback: true), () =>
        {
            goingBack = null;
            DeleteDroppedCheckpoints(old);
            rollbacks++;
            var message = $"guard: {r.Reason} at batch {r.Seq}; the generator went back to {r.From} and its learning rate was multiplied by {spec!.Guard.LrFactor} (rollback {rollbacks})";
            Log.Warning("{0}: {1}", Id, message);
            NodeMetrics.Rollbacks.WithLabels(RunId, "source-guard").Inc();
            Services.Coordinator.Tell(new EntityProgress(RunId, Id, r.Seq, TotalBatches, wanted.Count, State.Pool.Count, null, Services.NodeName, message, rollbacks));
            busy = false;
            Produce();
        });
    }
}
