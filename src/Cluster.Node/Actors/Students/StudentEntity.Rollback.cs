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
        if (t.Problem is { } problem) return problem;
        if (guard is null) return DivergenceGuard.NotFinite(loss);
        if (guard.CheckStep(loss) is { Healthy: false } v) return v.Reason;
        if (t.Accuracy is { } a && guard.CheckEvaluation(a) is { Healthy: false } e) return e.Reason;
        return null;
    }

    /// <summary>
    /// The divergence guard (<see cref="DivergenceGuard"/>, as in the engine loop): a step that fails,
    /// a non-finite loss or an evaluation far below the best rolls the replica back to its newest
    /// good checkpoint, or before the first to the seeded initial student as the engine loop does,
    /// with the learning rate in force multiplied by guard.lr_factor, so that rollbacks compound
    /// (not for an error libtorch raised: retried at the same rate, see docs/engineering-notes.md);
    /// the batches after it are trained again. After guard.max_rollbacks the run fails.
    /// </summary>
    /// <param name="at">The step that failed: the one just trained for the guard's verdict, the next one for an error.</param>
    /// <param name="verdict">The guard's reason (logged with the rollback, or as the failure); null for an error, logged here with its cause.</param>
    private void OnStepFailed(Exception? cause, long at, string? verdict = null)
    {
        var inner = cause is AggregateException { InnerException: { } i } ? i : cause;
        var reason = verdict ?? inner!.Message.Split('\n')[0];
        computing = false;
        if (verdict is null) Log.Error(cause, "{0}: step {1} failed", Id, at);
        if (trainer is null || spec is null || !DivergenceGuard.MayRollBack(spec.Guard, rollbacks))
        {
            Fail($"student failed at step {at}: {reason}" + (rollbacks > 0 ? $" (after {rollbacks} rollbacks)" : ""));
            return;
        }
        rollbacks++;
        var rescale = inner is not System.Runtime.InteropServices.ExternalException;
        var (factor, scale) = (spec.Guard.LrFactor, rescale ? lrScale * spec.Guard.LrFactor : lrScale);
        var n = rollbacks;
        Restore(State.Checkpoints, t => t.LrScale = scale,
            (_, warning, now) => $"{reason} at step {at}; rolled back" + (rescale ? $" and multiplied the learning rate by {factor}" : " at the same learning rate") +
                                 $" ({DivergenceGuard.Scale(now)}; rollback {n})" + (warning is null ? "" : $" ({warning})"),
            guard: true, $"{reason} at step {at}; rollback");
    }

    /// <param name="describe">The event's text from the checkpoint's step (0: the initial student), a warning about checkpoints passed over, and the scale the trainer now has.</param>
    private void Restore(ImmutableList<CheckpointWritten> usable, Action<StudentTrainer> adjust, Func<long, string?, double, string> describe, bool guard, string what)
    {
        busy = computing = true;
        var (current, f, blobs, s, d) = (trainer!, feed!, OwnBlobs, spec!, data!);
        EngineAccess.Compute(Self, () => StudentJobs.Restore(current, f, usable, blobs, () => NewTrainer(s, d, EngineAccess.DeviceFor(s)), adjust, describe, guard),
            failure: e => new RestoreFailed($"{what} failed: {e.Message}"));
    }

    private void OnRolledBack(RolledBack r)
    {
        busy = computing = false;
        if (r.Fresh is not null) trainer = r.Fresh;
        (step, lrScale) = (r.Step, r.LrScale);
        var message = r.Guard ? $"guard: {r.Reason}; now at step {r.Step}" : $"{r.Reason}; rolled back to step {r.Step} to stay in lockstep";
        Log.Warning("{0}: {1}", Id, message);
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
