using System.Collections.Immutable;
using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Akka.Persistence;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Students;
using Cluster.Node.Hosting;
using Cluster.Node.Telemetry;
using Distill.Engine.Methods;
using Distill.Engine.Pipeline;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using static Cluster.Node.Actors.StudentJobs;

namespace Cluster.Node.Actors;

/// <summary>Going back: the divergence guard's rollback and the replicas' (both through <see cref="StudentJobs.Restore"/>).</summary>
public sealed partial class StudentEntity
{
    /// <summary>The guard's verdict on the step's loss and evaluation (a non-finite loss fails the step even with the guard off).</summary>
    private string? Unhealthy(Trained t)
    {
        var loss = t.Loss is { } l ? new Dictionary<string, double> { [objective!.LossName] = l } : [];
        if (guard is null) return t.Loss is { } x && !double.IsFinite(x) ? $"{objective!.LossName} is {x}" : null;
        if (guard.CheckStep(loss) is { Healthy: false } v) return v.Reason;
        if (t.Accuracy is { } a && guard.CheckEvaluation(a) is { Healthy: false } e) return e.Reason;
        return null;
    }

    /// <summary>
    /// The divergence guard (<see cref="DivergenceGuard"/>, as in the engine loop): a step that fails,
    /// a non-finite loss or an evaluation far below the best rolls the replica back to its newest
    /// good checkpoint with its learning rate multiplied by guard.lr_factor (not for an error libtorch
    /// raised: retried at the same rate, see docs/engineering-notes.md); the batches after it are
    /// trained again. After guard.max_rollbacks the run fails.
    /// </summary>
    private void OnStepFailed(Exception cause)
    {
        var inner = cause is AggregateException { InnerException: { } i } ? i : cause;
        var reason = inner.Message.Split('\n')[0];
        computing = false;
        Log.Error(cause, "{0}: step {1} failed", Id, step + 1);
        if (trainer is null || spec is null || !DivergenceGuard.MayRollBack(spec.Guard, rollbacks))
        {
            Fail($"student failed at step {step + 1}: {reason}" + (rollbacks > 0 ? $" (after {rollbacks} rollbacks)" : ""));
            return;
        }
        rollbacks++;
        var scale = inner is not System.Runtime.InteropServices.ExternalException;
        var factor = spec.Guard.LrFactor;
        Restore(State.Checkpoints, freshBeforeFirst: false, t => { if (scale) t.ScaleLearningRates(factor); },
            (_, _) => $"{reason}; rolled back{(scale ? $" and multiplied the learning rate by {factor}" : ", same learning rate")} (rollback {rollbacks})",
            guard: true, $"{reason}; rollback");
    }

    private void Restore(ImmutableList<CheckpointWritten> usable, bool freshBeforeFirst, Action<StudentTrainer> adjust, Func<long, string?, string> describe, bool guard, string what)
    {
        busy = computing = true;
        var (current, f, blobs, s, d, runId, id) = (trainer!, feed!, OwnBlobs, spec!, data!, RunId, Id);
        EngineAccess.Compute(Self, () => StudentJobs.Restore(current, f, usable, blobs, freshBeforeFirst, () => NewTrainer(s, d, EngineAccess.DeviceFor(s)), adjust, describe, guard, runId, id),
            failure: e => new Status.Failure(new InvalidOperationException($"{what} failed: {e.Message}")));
    }

    private void OnRolledBack(RolledBack r)
    {
        busy = computing = false;
        if (r.Fresh is not null) trainer = r.Fresh;
        (step, lrScale) = (r.Step, r.LrScale);
        var message = r.Guard ? $"run {RunId}, entity {Id}: guard: {r.Reason}; now at step {r.Step}"
            : $"run {RunId}, entity {Id}: {r.Reason}; rolled back to step {r.Step} to stay in lockstep";
        Log.Warning(message);
        NodeMetrics.Rollbacks.WithLabels(RunId, r.Guard ? "guard" : "lockstep").Inc();
        Services.Coordinator.Tell(new EntityProgress(RunId, Id, r.Step, Total, 0, 0, null, Services.NodeName, message));
        // batches and gradients after the checkpoint are trained and exchanged again (a peer at our
        // step resends its gradient when it hears where we are)
        intake = intake!.RolledBack(step);
        if (!plan!.KeepsBatches) unhanded.Clear();
        exchange!.Clear();
        lastBatchUtc = DateTime.UtcNow;
        AnnounceStep(_ => true, restored: true);
        if (pendingRollback is not null && pendingRollback.Value.Step < step) { RollBackToPeer(); return; }
        pendingRollback = null;
        RequestMore();
        TryTrain();
    }
}
