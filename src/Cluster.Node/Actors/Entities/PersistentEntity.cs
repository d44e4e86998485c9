using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Akka.Persistence;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Node.Hosting;
using Cluster.Node.Storage;

namespace Cluster.Node.Actors;

/// <summary>
/// What the generator, teacher and student entities share: their id and node services, the
/// <see cref="EntityState"/> rebuilt from snapshot and journal, journal housekeeping after a
/// snapshot, reporting a failure to the coordinator (logging through Eventsourced's Log), and the
/// metrics rows and sample grids it delivers at least once (PersistentEntity.Reports.cs). The
/// persistence id is "kind-id".
/// </summary>
public abstract partial class PersistentEntity : ReceivePersistentActor, IWithTimers
{
    private readonly string kind;
    private int eventsSinceSnapshot;

    protected PersistentEntity(string entityId, NodeServices services)
    {
        Id = entityId;
        Services = services;
        OwnBlobs = services.Blobs.Scope(entityId);
        kind = EntityId.Parse(entityId).Kind;
        Recover<SnapshotOffer>(o => { if (o.Snapshot is EntitySnapshot s) State = EntityState.FromSnapshot(s); });
        Recover<IPersistedEvent>(e => State = State.Apply(e));
        Recover<RecoveryCompleted>(_ =>
        {
            witness ??= Services.Witness.For(PersistenceId);
            if (witness.Recovered(LastSequenceNr) is not { } loss)
            {
                StartReporting();
                OnRecovered();
                return;
            }
            // never redo or skip work silently: the run fails with the reason
            ReportFailure(loss);
            Become(() => JournalLost(loss));
        });
        // a paused run's entities let go of their memory; their journal holds where they were
        Command<PauseEntity>(_ => Context.Parent.Tell(new Passivate(PoisonPill.Instance)));
        Command<SaveSnapshotSuccess>(s => DeleteMessages(s.Metadata.SequenceNr));
        Command<SaveSnapshotFailure>(f => Log.Warning("{0}: snapshot failed: {1}", Id, f.Cause.Message));
        Command<DeleteMessagesSuccess>(_ => { });
        Command<DeleteMessagesFailure>(f => Log.Warning("{0}: journal cleanup failed: {1}", Id, f.Cause.Message));
        Command<ReportsReceived>(OnReportsReceived);
        Command<ResendReports>(_ => ResendHeld());
    }

    public ITimerScheduler Timers { get; set; } = null!;

    private JournalWitness.Tracker? witness;

    /// <summary>Every acknowledged write moves the witness on (LastSequenceNr counts acknowledged events only).</summary>
    protected override bool AroundReceive(Receive receive, object message)
    {
        var handled = base.AroundReceive(receive, message);
        witness?.Acknowledged(LastSequenceNr);
        return handled;
    }

    /// <summary>Its journal lost events: it answers with the reason and does no work, until the coordinator stops it.</summary>
    private void JournalLost(string loss)
    {
        Command<StartEntity>(m => Services.Coordinator.Tell(new EntityFailed(m.RunId, Id, loss)));
        Command<GetEntityStatus>(_ => Sender.Tell(new EntityStatus(Id, State.Started, 0, 0, 0, 0, Services.NodeName, "failed: its journal lost events")));
        Command<StopEntity>(_ => Context.Parent.Tell(new Passivate(PoisonPill.Instance)));
        CommandAny(m => Log.Warning("{0}: {1} dropped: its journal lost events", Id, m.GetType().Name));
    }

    /// <summary>The entity id, "run/kind/index".</summary>
    protected string Id { get; }
    protected NodeServices Services { get; }
    /// <summary>This entity's batches and checkpoints (<see cref="BlobStore.Scope"/>); what others read (teacher, weights) stays in Services.Blobs.</summary>
    protected BlobStore OwnBlobs { get; }
    protected EntityState State { get; set; } = EntityState.Empty;

    public override string PersistenceId => $"{kind}-{Id}";

    /// <summary>After recovery: resume the run's work if the entity had started one.</summary>
    protected abstract void OnRecovered();

    /// <summary>An Akka snapshot of <see cref="State"/> every `every` calls, so that recovery replays little.</summary>
    protected void MaybeSnapshot(int every)
    {
        if (++eventsSinceSnapshot < every) return;
        eventsSinceSnapshot = 0;
        SaveSnapshot(State.ToSnapshot());
    }

    /// <summary>Deletes the blobs of checkpoints in `before` that the current state no longer refers to (trimmed to the newest few).</summary>
    protected void DeleteDroppedCheckpoints(System.Collections.Immutable.ImmutableList<CheckpointWritten> before)
    {
        foreach (var gone in before.Where(c => State.Checkpoints.All(k => k.Blob != c.Blob))) OwnBlobs.Delete(gone.Blob);
    }

    /// <summary>
    /// The journal refused a write (PostgreSQL down): Akka stops the entity, and it starts again with
    /// the next message, once the journal answers. The run's status says so meanwhile, instead of
    /// standing still without a word.
    /// </summary>
    protected override void OnPersistFailure(Exception cause, object @event, long sequenceNr)
    {
        SayJournalUnavailable(cause);
        base.OnPersistFailure(cause, @event, sequenceNr);
    }

    /// <summary>The journal could not be read to recover the entity: as <see cref="OnPersistFailure"/>.</summary>
    protected override void OnRecoveryFailure(Exception reason, object? message = null)
    {
        SayJournalUnavailable(reason);
        base.OnRecoveryFailure(reason, message);
    }

    private void SayJournalUnavailable(Exception cause) =>
        Services.Coordinator.Tell(new EntityProgress(State.RunId ?? EntityId.Parse(Id).RunId, Id, EntityProgress.NewsOnly, 0, 0, 0, null, Services.NodeName,
            $"its journal is unavailable ({cause.GetBaseException().Message.Split('\n')[0].Trim()}); it goes on once the journal answers"));

    /// <summary>Logs the reason and tells the coordinator, which fails the run.</summary>
    protected void ReportFailure(string reason)
    {
        Log.Error("{0}: {1}", Id, reason);
        Services.Coordinator.Tell(new EntityFailed(State.RunId ?? EntityId.Parse(Id).RunId, Id, reason));
    }
}
