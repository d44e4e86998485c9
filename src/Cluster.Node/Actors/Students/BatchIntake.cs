using System.Collections.Immutable;
using Distill.Engine.Pipeline;

namespace Cluster.Node.Actors;

/// <summary>A range of batches to ask the source for.</summary>
public readonly record struct BatchRequest(long From, int Count);

/// <summary>
/// A student replica's bookkeeping of its batches, on the mailbox: which it holds and how far it
/// has asked the source, against the run's <see cref="BatchPlan"/> (a batch per step, or rounds
/// every later step samples). Pure: each decision returns the next intake, and the entity sends,
/// hands and trains from what it says. `step` is the student's completed step.
/// </summary>
public sealed record BatchIntake(BatchPlan Plan, ImmutableSortedSet<long> Received, long RequestedUpTo)
{
    /// <summary>A replica at `step`, holding nothing yet.</summary>
    public static BatchIntake At(BatchPlan plan, long step) => new(plan, [], plan.BatchesFor(step + 1).First - 1);

    /// <summary>Whether batch `seq` is one this replica asked for and still needs (not a duplicate or stale delivery).</summary>
    public bool Accepts(long seq, long step) => seq >= Plan.BatchesFor(step + 1).First && seq <= RequestedUpTo && !Received.Contains(seq);

    public BatchIntake Receive(long seq) => this with { Received = Received.Add(seq) };

    /// <summary>Whether every batch the next step reads is here.</summary>
    public bool Ready(long step) => Missing(step) is null && step < Plan.TotalSteps;

    /// <summary>The first batch the next step reads that has not come (null: all here).</summary>
    public long? Missing(long step)
    {
        var (first, last) = Plan.BatchesFor(step + 1);
        for (var s = first; s <= last; s++)
            if (!Received.Contains(s)) return s;
        return null;
    }

    /// <summary>After step `step` trained: the batches no later step reads are dropped.</summary>
    public BatchIntake Trained(long step)
    {
        var first = Plan.BatchesFor(step + 1).First;
        return Received.Count > 0 && Received.Min < first ? this with { Received = Received.Where(s => s >= first).ToImmutableSortedSet() } : this;
    }

    /// <summary>Keeps a window of batches asked for ahead of `step`: the backpressure (null: enough asked).</summary>
    public (BatchIntake Next, BatchRequest? Request) RequestMore(long step, int window)
    {
        var target = Plan.RequestUpTo(step, window);
        if (target <= RequestedUpTo) return (this, null);
        return (this with { RequestedUpTo = target }, new BatchRequest(RequestedUpTo + 1, (int)(target - RequestedUpTo)));
    }

    /// <summary>Asks again from the first missing batch (a request or batch lost with a dying source or teacher).</summary>
    public BatchRequest? AskAgain(long step) =>
        Missing(step) is { } from ? new BatchRequest(from, (int)Math.Max(1, RequestedUpTo - from + 1)) : null;

    /// <summary>
    /// After a rollback to `step`: the batches after it are asked for and trained again; a plan
    /// whose batches stay (rounds) keeps them, since every step samples the same rounds.
    /// </summary>
    public BatchIntake RolledBack(long step) => Plan.KeepsBatches ? this : At(Plan, step);
}
