using Akka.Actor;
using Akka.Event;
using Cluster.Contracts;
using Cluster.Contracts.Pipeline;

namespace Cluster.Node.Actors;

/// <summary>The student's intake: batches asked for in a bounded window, received, and asked for again when they stall.</summary>
public sealed partial class StudentEntity
{
    private sealed record CheckStalled : INoSerializationVerificationNeeded
    {
        public static readonly CheckStalled Instance = new();
    }

    /// <summary>A request or batch lost with a dying source or teacher is asked for again after this long.</summary>
    public static readonly TimeSpan StallTimeout = TimeSpan.FromSeconds(5);

    private void OnBatch(LabelledBatch b)
    {
        if (intake is null || !intake.Accepts(b.Seq, step)) return;   // not ready, or a duplicate or stale delivery
        intake = intake.Receive(b.Seq);
        unhanded[b.Seq] = b;
        lastBatchUtc = DateTime.UtcNow;
        TryTrain();
    }

    private void RequestMore()
    {
        var (next, request) = intake!.RequestMore(step, spec!.Cluster.Window);
        intake = next;
        if (request is { } r) Services.Generators.Tell(new RequestBatches(EntityId.Generator(RunId), r.From, r.Count, Id, Services.DataEndpoint));
    }

    private void OnCheckStalled()
    {
        if (trainer is null || State.Finished || Done || Held || DateTime.UtcNow - lastBatchUtc < StallTimeout) return;
        if (Replicas > 1 && busy && !computing)
        {
            // waiting on a peer's gradient: tell the missing peers where we are (this also starts a
            // replica whose node died, through remember-entities, and makes it answer); a peer
            // counts once all of its part is in (its gradient, or its shard of it, and its shard's mean)
            lastBatchUtc = DateTime.UtcNow;
            var have = exchange!.Complete(step + 1);
            Log.Info("{0}: waiting on the gradient of replicas {1} for step {2}", Id, string.Join(",", Enumerable.Range(0, Replicas).Where(r => !have.Contains(r))), step + 1);
            AnnounceStep(peer => !have.Contains(peer));
            return;
        }
        if (busy || intake!.AskAgain(step) is not { } again) return;
        // nothing came for a while: the source or teacher may have died with our request (duplicates are dropped)
        lastBatchUtc = DateTime.UtcNow;
        Log.Info("{0}: no batch {1} for {2:F0} s; asking the source again", Id, again.From, StallTimeout.TotalSeconds);
        if (competitorOffer is { } offer && offer.Round >= again.From) Services.Generators.Tell(offer);
        Services.Generators.Tell(new RequestBatches(EntityId.Generator(RunId), again.From, again.Count, Id, Services.DataEndpoint));
    }
}
