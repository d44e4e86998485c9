using Distill.Engine.Methods;
using static TorchSharp.torch;

namespace Distill.Engine.Pipeline;

/// <summary>
/// The batches a pipeline student has received, on the compute thread, and the batch each step
/// trains on (<see cref="BatchPlan.CreateFeed"/>). The student entity hands batches to it as job
/// arguments, in order, and never touches the tensors itself.
/// </summary>
public interface IStudentFeed : IDisposable
{
    /// <summary>Where a batch handed to the feed is best built (the step's device, or the CPU for a pool).</summary>
    Device StorageFor(Device compute);

    /// <summary>Takes ownership of batch `seq`.</summary>
    void Add(long seq, StudentBatch batch);

    /// <summary>Step `step`'s batch on `device` (the caller owns it).</summary>
    StudentBatch Take(long step, Device device);

    /// <summary>Drops what a rollback makes stale (the batches of one step each; a pool keeps its rounds).</summary>
    void Clear();
}

/// <summary>One batch per step: step s trains on batch s as it came, once.</summary>
public sealed class StepFeed : IStudentFeed
{
    private readonly SortedDictionary<long, StudentBatch> held = [];

    public Device StorageFor(Device compute) => compute;

    public void Add(long seq, StudentBatch batch)
    {
        if (held.Remove(seq, out var old)) old.Dispose();
        held[seq] = batch;
    }

    public StudentBatch Take(long step, Device device)
    {
        if (!held.Remove(step, out var b)) throw new InvalidOperationException($"student step {step} has no batch {step}; the feed holds {string.Join(",", held.Keys)}");
        return b;
    }

    public void Clear()
    {
        foreach (var b in held.Values) b.Dispose();
        held.Clear();
    }

    public void Dispose() => Clear();
}

/// <summary>
/// DeepInversion's pool: every round received joins a <see cref="SyntheticPool"/> on the CPU and
/// step s samples rounds 1..round(s) with a generator seeded by (seed, s), so that replicas and a
/// restored student draw the same batch.
/// </summary>
public sealed class PoolFeed(BatchPlan plan, long seed, int studentBatch) : IStudentFeed
{
    private readonly SyntheticPool pool = new();
    private double temperature = 1;

    public Device StorageFor(Device compute) => CPU;

    public void Add(long seq, StudentBatch batch)
    {
        using (batch)
        {
            if (batch.SoftLabels is null) throw new InvalidDataException($"round {seq} came without the teacher's probabilities");
            pool.Add((int)seq, batch.Images, batch.SoftLabels);
            temperature = batch.Temperature;
        }
    }

    public StudentBatch Take(long step, Device device)
    {
        var (images, probs) = pool.Sample(seed, step, studentBatch, device, (int)plan.BatchesFor(step).Last);
        return new StudentBatch(images, null, probs, temperature);
    }

    public void Clear() { }

    public void Dispose() => pool.Dispose();
}
