using System.Diagnostics;
using Akka.Actor;
using Akka.Event;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Node.Telemetry;
using Distill.Engine.Runs;
using Distill.Engine.Training;
using static Cluster.Node.Actors.StudentJobs;

namespace Cluster.Node.Actors;

/// <summary>What a trained step leads to: a checkpoint, its metrics, the run's end or a pause at an ASHA rung.</summary>
public sealed partial class StudentEntity
{
    private void SaveCheckpoint(Trained t)
    {
        var written = Stopwatch.StartNew();
        var blob = OwnBlobs.Put(t.Checkpoint!);
        var old = State.Checkpoints;
        best = Math.Max(best, t.Accuracy ?? double.NegativeInfinity);
        var bestNow = best;
        var journal = Stopwatch.StartNew();
        Persist(new CheckpointWritten(t.Seq, t.Seq, blob, t.Accuracy, bestNow, t.TestAccuracy), e =>
        {
            NodeMetrics.JournalSeconds.WithLabels(EntityKinds.Student).Observe(journal.Elapsed.TotalSeconds);
            NodeMetrics.CheckpointSeconds.WithLabels(EntityKinds.Student).Observe(written.Elapsed.TotalSeconds);
            State = State.Apply(e);
            DeleteDroppedCheckpoints(old);
            // every batch up to here is in a checkpoint now: the source may drop those no later step reads
            if (plan!.ReleasableAt(e.Step) is > 0 and var upTo) Services.Generators.Tell(new ReleaseBatches(EntityId.Generator(RunId), Id, upTo));
            MaybeSnapshot(50);
            if (t.Weights is not null) Finish(t, bestNow);
            else if (State.HoldAt == e.Step) ReportHeld(t.Accuracy);
        });
    }

    private void ReportMetrics(Trained t)
    {
        var values = new Dictionary<string, double> { [objective!.LrName] = t.Lr, ["rss_mb"] = RunDirectory.ResidentMegabytes() };
        if (t.Loss is { } l) values[objective.LossName] = l;
        if (t.Accuracy is { } a) values[data!.EvalMetric] = a;
        if (t.TestAccuracy is { } test) values[DataSplits.TestAccuracy] = test;
        Report(RunMetrics.Of(RunId, Id, step, values));
    }

    private void Finish(Trained t, double best)
    {
        var weights = Services.Blobs.Put(t.Weights!);
        Persist(new EntityFinished(step), e =>
        {
            State = State.Apply(e);
            Services.Coordinator.Tell(new StudentFinished(RunId, Id, t.Accuracy ?? double.NaN, best, step, weights, rollbacks, t.TestAccuracy));
        });
    }

    /// <summary>The run's pause step is reached and checkpointed: the coordinator pauses the run (it may hear this again after a restart).</summary>
    private void ReportHeld(double? accuracy)
    {
        Log.Info("{0}: paused at step {1}", Id, step);
        if (replica == 0) Services.Coordinator.Tell(new StudentHeld(RunId, Id, step, accuracy, State.Checkpoints.LastOrDefault(c => c.Step == step)?.Blob));
    }

    /// <summary>A new pause step (a promotion sends the run on): recorded, then training goes on to it.</summary>
    private void SetHold(long? holdAt) => Persist(new EntityHold(holdAt), e =>
    {
        State = State.Apply(e);
        if (trainer is null) return;
        if (Held) { ReportHeld(State.Checkpoints.LastOrDefault()?.Accuracy); return; }
        Log.Info("{0}: goes on from step {1} to {2}", Id, step, holdAt?.ToString() ?? "the end");
        lastBatchUtc = DateTime.UtcNow;
        RequestMore();
        TryTrain();
    });

    private void ReportFinishedAgain()
    {
        if (replica != 0 || State.Checkpoints.LastOrDefault() is not { } last) return;
        // the coordinator may have missed the first report; the last checkpoint holds the final model
        Services.Coordinator.Tell(new StudentFinished(RunId, Id, last.Accuracy ?? double.NaN, last.BestAccuracy, last.Step, "", rollbacks, last.TestAccuracy));
    }
}
