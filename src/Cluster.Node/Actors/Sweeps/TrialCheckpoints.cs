using Cluster.Contracts;
using Cluster.Contracts.Runs;
using Cluster.Node.Storage;

namespace Cluster.Node.Actors;

/// <summary>
/// The checkpoints a sweep keeps for PBT, in a store of each trial's own (sweeps/&lt;id&gt;/&lt;trial&gt;
/// under the shared blob store's owners): its pin (the student's and source's checkpoints at its
/// latest pause, copied there when it pauses, so that its run trimming or ending its own
/// checkpoints loses nothing another trial may copy) and its fork (the checkpoints its current run
/// began from). A run that begins from a fork finds them in its entities' own stores, put there
/// before it is submitted. Content-addressed: a copy is the same hash, and copying again is a no-op.
/// </summary>
public sealed class TrialCheckpoints(BlobStore root)
{
    private BlobStore Trial(string sweepId, string trialId) => root.Scope($"sweeps/{sweepId}/{trialId}");

    /// <summary>Copies a paused run's checkpoints (student replica 0's, the source's) into the trial's store.</summary>
    public void Pin(string sweepId, string trialId, string runId, string studentBlob, string sourceBlob)
    {
        var trial = Trial(sweepId, trialId);
        Copy(root.Scope(EntityId.Student(runId, 0)), trial, studentBlob);
        Copy(root.Scope(EntityId.Generator(runId)), trial, sourceBlob);
    }

    /// <summary>Copies trial `from`'s pinned checkpoints into trial `to`'s store (its fork).</summary>
    public void Take(string sweepId, string from, string to, ForkPoint pin)
    {
        var (source, target) = (Trial(sweepId, from), Trial(sweepId, to));
        Copy(source, target, pin.StudentBlob);
        if (pin.SourceBlob is { } s) Copy(source, target, s);
    }

    /// <summary>Puts a trial's fork into the stores of the run's entities: every student replica's and the source's.</summary>
    public void Seed(string sweepId, string trialId, string runId, int replicas, ForkPoint fork)
    {
        var trial = Trial(sweepId, trialId);
        for (var i = 0; i < replicas; i++) Copy(trial, root.Scope(EntityId.Student(runId, i)), fork.StudentBlob);
        if (fork.SourceBlob is { } s) Copy(trial, root.Scope(EntityId.Generator(runId)), s);
    }

    /// <summary>Deletes the blobs of a trial's store that its pin and fork no longer name.</summary>
    public void Prune(string sweepId, string trialId, IEnumerable<string?> before, IEnumerable<string?> now)
    {
        var keep = now.OfType<string>().ToHashSet();
        var trial = Trial(sweepId, trialId);
        foreach (var gone in before.OfType<string>().Where(b => !keep.Contains(b))) trial.Delete(gone);
    }

    /// <summary>Deletes a trial's store (it ended: no trial copies it any more).</summary>
    public void Drop(string sweepId, string trialId)
    {
        var dir = Trial(sweepId, trialId).Root;
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }

    private static void Copy(BlobStore from, BlobStore to, string hash)
    {
        if (!to.Exists(hash)) to.Put(from.Get(hash));
    }
}
