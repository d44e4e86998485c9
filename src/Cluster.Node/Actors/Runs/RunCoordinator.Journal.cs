using Akka.Actor;
using Akka.Event;
using Akka.Persistence;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Runs;
using Cluster.Node.Storage;

namespace Cluster.Node.Actors;

/// <summary>
/// The coordinator's journal: each event applied and snapshotted every 20, older events deleted
/// once a snapshot holds them, the journal's witness moved on, and a failed write told to the
/// client that waits for it.
/// </summary>
public sealed partial class RunCoordinator
{
    private JournalWitness.Tracker? witness;

    /// <summary>Every acknowledged write moves the journal's witness on (<see cref="JournalWitness"/>).</summary>
    protected override bool AroundReceive(Receive receive, object message)
    {
        var handled = base.AroundReceive(receive, message);
        witness?.Acknowledged(LastSequenceNr);
        return handled;
    }

    private void PersistAndSnapshot(IPersistedEvent e, Action then)
    {
        Persist(e, ev =>
        {
            persistingFor = null;
            state = state.Apply(ev);
            then();
            RunStateGauges(ev);
            if (++eventsSinceSnapshot >= 20) { eventsSinceSnapshot = 0; SaveSnapshot(state.ToSnapshot()); }
        });
    }

    private void ReceiveSnapshots()
    {
        Command<SaveSnapshotSuccess>(s => DeleteMessages(s.Metadata.SequenceNr));
        Command<SaveSnapshotFailure>(f => log.Warning("coordinator snapshot failed: {0}", f.Cause.Message));
        Command<DeleteMessagesSuccess>(_ => { });
        Command<DeleteMessagesFailure>(_ => { });
    }

    /// <summary>The actor stops after this (and its supervisor starts it again): the client waiting for the write hears why.</summary>
    protected override void OnPersistFailure(Exception cause, object @event, long sequenceNr)
    {
        // (the first line of the innermost cause: a driver's message may carry its own stack)
        persistingFor?.Tell(new RunRejected($"{JournalUnavailable} ({cause.GetBaseException().Message.Split('\n')[0].Trim()})"));
        persistingFor = null;
        base.OnPersistFailure(cause, @event, sequenceNr);
    }
}
