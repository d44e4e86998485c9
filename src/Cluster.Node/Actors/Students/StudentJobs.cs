using System.Collections.Immutable;
using System.Numerics;
using System.Runtime.InteropServices;
using Akka.Actor;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Node.Hosting;
using Cluster.Node.Storage;
using Cluster.Node.Transport;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using static TorchSharp.torch;

namespace Cluster.Node.Actors;

/// <summary>
/// The student entity's compute jobs. Each runs on the compute thread with everything it needs
/// passed in (the trainer and feed it owns there, the batches handed over, what is due after the
/// step) and answers with one message; none reads or writes the actor's fields.
/// </summary>
internal static class StudentJobs
{
    /// <summary>The engine side of a replica: its trainer and feed live on the compute thread; the rest is for the mailbox.</summary>
    /// <param name="Loaded">where a run that starts at step 0 took its student's weights from (the spec's student checkpoint), for events.log</param>
    public sealed record Ready(StudentTrainer Trainer, IStudentFeed Feed, BatchPlan Plan, DataSplits Data, long Step, double LrScale, long GradientSize,
        string? Warning, double Best, byte[]? Competitor, string? Loaded = null) : INoSerializationVerificationNeeded;

    /// <summary>A step done; Competitor: the weights a batch competes with (ADI), Weights: the final model (replica 0).</summary>
    /// <param name="Images">the step's whole batch (every replica's share), for the node's images/s</param>
    /// <param name="Accuracy">on the evaluation split (validation or test, <see cref="DataSplits.EvalX"/>)</param>
    /// <param name="TestAccuracy">the test set with the final weights, where the evaluation split is a validation split</param>
    /// <param name="Problem">What was wrong with the step before its loss was known: replicas' mean gradient that is not finite.</param>
    public sealed record Trained(long Seq, double? Loss, double? Accuracy, byte[]? Checkpoint, byte[]? Weights, double Lr, byte[]? Competitor, long Images, double? TestAccuracy = null,
        string? Problem = null) : INoSerializationVerificationNeeded;

    /// <param name="Images">the step's whole batch, of which this replica took its slice</param>
    public sealed record GradientReady(long Seq, float[] Gradient, long Images) : INoSerializationVerificationNeeded;

    public sealed record RolledBack(long Step, double LrScale, string Reason, StudentTrainer? Fresh, bool Guard) : INoSerializationVerificationNeeded;

    /// <summary>A rollback that could not be made (neither a checkpoint nor the initial student could be loaded): the run fails with it.</summary>
    public sealed record RestoreFailed(string Reason) : INoSerializationVerificationNeeded;

    /// <summary>What is due once step Seq is trained (decided on the mailbox from the step number).</summary>
    public sealed record AfterStep(bool Evaluate, bool Checkpoint, bool FinalWeights, bool OfferWeights, DataSplits Data, Device Device, int EvalBatch);

    /// <summary>The seeded initial student every replica starts from.</summary>
    public static StudentTrainer NewTrainer(RunSpec s, DataSplits data, Device device) => NewTrainer(s, data, device, out _);

    private static StudentTrainer NewTrainer(RunSpec s, DataSplits data, Device device, out Distill.Engine.Interop.LoadReport? loaded) =>
        new(EngineAccess.NewStudent(s, data, device, out loaded), s.Student.Train, s.Method.PipelineStudentSteps(s, data.TrainX.shape[0]), s.Method.Objective(s));

    /// <summary>Builds the trainer from the newest good checkpoint (a fresh one if none loads).</summary>
    public static Ready Start(RunSpec s, BatchPlan plan, ImmutableList<CheckpointWritten> checkpoints, BlobStore blobs, Func<DataSplits> loadData)
    {
        var device = EngineAccess.DeviceFor(s);
        var data = loadData();
        var trainer = NewTrainer(s, data, device, out var loaded);
        var (step, warning) = Checkpoints.RestoreNewest(checkpoints, blobs, trainer.LoadState);
        if (step == 0 && warning is not null)
        {
            // a failed load may have left part of a checkpoint in the model: start clean
            trainer.Model.Dispose();
            trainer.Dispose();
            trainer = NewTrainer(s, data, device);
        }
        var best = checkpoints.Where(c => c.Step <= trainer.Step).Select(c => c.BestAccuracy).DefaultIfEmpty(double.NegativeInfinity).Max();
        var offer = plan.BatchNeedingWeightsAfter(trainer.Step) is not null ? EngineAccess.SaveModel(trainer.Model) : null;
        return new Ready(trainer, plan.CreateFeed(s.Seed), plan, data, trainer.Step, trainer.LrScale, trainer.GradientSize, warning, best, offer,
            trainer.Step == 0 && loaded is not null ? $"student starts from {s.Student.Checkpoint}: {loaded}" : null);
    }

    /// <summary>Hands the new batches to the feed (in order) and takes step `seq`'s batch from it.</summary>
    public static StudentBatch Batch(IStudentFeed feed, IReadOnlyList<LabelledBatch> handed, long seq, Device device)
    {
        var storage = feed.StorageFor(device);
        foreach (var b in handed)
            feed.Add(b.Seq, new StudentBatch(TensorWire.ToTensor(b.Images, storage), b.Labels is { } y ? TensorWire.ToLabels(y, storage) : null,
                b.SoftLabels is { } p ? TensorWire.ToTensor(p, storage) : null, b.Temperature));
        return feed.Take(seq, device);
    }

    /// <summary>One replica alone: the whole step.</summary>
    public static Trained Step(StudentTrainer t, IStudentFeed feed, IReadOnlyList<LabelledBatch> handed, long seq, bool wantLoss, AfterStep after)
    {
        using var batch = Batch(feed, handed, seq, after.Device);
        return Finish(t, seq, t.TrainStep(batch, wantLoss), after, batch.Images.shape[0]);
    }

    /// <summary>One of N replicas: the gradient of its contiguous slice of the batch.</summary>
    public static GradientReady Gradient(StudentTrainer t, IStudentFeed feed, IReadOnlyList<LabelledBatch> handed, long seq, int replica, int replicas, Device device)
    {
        using var batch = Batch(feed, handed, seq, device);
        var per = batch.Images.shape[0] / replicas;
        using var slice = batch.Slice(replica * per, per);
        var (g, _) = t.ComputeGradient(slice);
        using (g) return new GradientReady(seq, g.data<float>().ToArray(), batch.Images.shape[0]);
    }

    /// <summary>
    /// The mean of every replica's gradient (<see cref="StepMean.TakeMean"/>), applied. Replicas
    /// see only their slices' losses, so on the steps the guard checks, each checks the mean, the
    /// same bits on every replica: a value that is not finite fails the step on all of them alike.
    /// </summary>
    public static Trained Apply(StudentTrainer t, StepMean all, long seq, bool check, AfterStep after, long images)
    {
        var sum = all.TakeMean();
        string? problem = null;
        try
        {
            if (check && FirstNonFinite(sum) is { } at) problem = $"the replicas' mean gradient is {sum[at]} at element {at}";
            else
            {
                using var mean = tensor(sum);
                t.ApplyGradient(mean);
            }
        }
        finally { ExactPool<float>.Shared.Return(sum); }
        return problem is null ? Finish(t, seq, null, after, images) : new Trained(seq, null, null, null, null, t.Lr, null, images, Problem: problem);
    }

    /// <summary>The index of the first NaN or infinity, or null.</summary>
    public static int? FirstNonFinite(float[] values)
    {
        // x * 0 is 0 for a finite x and NaN otherwise: one vector pass, and the scan only when it found one
        var vectors = MemoryMarshal.Cast<float, Vector<float>>(values.AsSpan());
        var acc = Vector<float>.Zero;
        foreach (var v in vectors) acc += v * Vector<float>.Zero;
        var from = float.IsFinite(Vector.Sum(acc)) ? vectors.Length * Vector<float>.Count : 0;
        for (var j = from; j < values.Length; j++)
            if (!float.IsFinite(values[j])) return j;
        return null;
    }

    private static Trained Finish(StudentTrainer t, long seq, double? loss, AfterStep after, long images)
    {
        var acc = after.Evaluate ? Evaluation.Accuracy(t.Model, after.Data.EvalX, after.Data.EvalY, after.Device, after.EvalBatch) : (double?)null;
        var test = after.FinalWeights && after.Data.HasValidation ? Evaluation.Accuracy(t.Model, after.Data.TestX, after.Data.TestY, after.Device, after.EvalBatch) : (double?)null;
        var checkpoint = after.Checkpoint ? EngineAccess.Save(t.SaveState) : null;
        var weights = after.FinalWeights ? EngineAccess.SaveModel(t.Model) : null;
        var competitor = after.OfferWeights ? EngineAccess.SaveModel(t.Model) : null;
        return new Trained(seq, loss, acc, checkpoint, weights, t.Lr, competitor, images, test);
    }

    /// <summary>
    /// The one way a replica goes back (the guard's rollback and the replicas' lockstep): the newest
    /// loadable checkpoint of `usable`, or without one the seeded initial student; then `adjust`
    /// (the learning-rate scale). The feed drops what the rollback made stale.
    /// </summary>
    public static RolledBack Restore(StudentTrainer current, IStudentFeed feed, ImmutableList<CheckpointWritten> usable, BlobStore blobs,
        Func<StudentTrainer> fresh, Action<StudentTrainer> adjust, Func<long, string?, double, string> describe, bool guard)
    {
        var trainer = current;
        var (restored, warning) = Checkpoints.RestoreNewest(usable, blobs, trainer.LoadState);
        StudentTrainer? replaced = null;
        if (restored == 0)
        {
            replaced = fresh();
            current.Model.Dispose();
            current.Dispose();
            trainer = replaced;
        }
        adjust(trainer);
        feed.Clear();
        return new RolledBack(trainer.Step, trainer.LrScale, describe(restored, warning, trainer.LrScale), replaced, guard);
    }
}
