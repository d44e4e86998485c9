using Akka.Actor;
using Akka.Cluster;
using Cluster.Contracts;
using Cluster.Contracts.Runs;
using Cluster.Node.Configuration;

namespace Cluster.Node.Actors;

/// <summary>
/// Admission: the nodes that are up, the entity kinds and run slots each offers, and queued runs
/// taking the free slots, oldest first.
/// </summary>
public sealed partial class RunCoordinator
{
    /// <summary>The entity kinds each node that is up hosts: a run none of whose kinds' nodes is up says it waits for one.</summary>
    private readonly Dictionary<Address, IReadOnlySet<string>> hosts = [];
    /// <summary>The runs each node that is up takes at once (its "slots:N" role).</summary>
    private readonly Dictionary<Address, int> slots = [];

    /// <summary>The cluster's slots (null outside a cluster: no limit).</summary>
    private int? Slots() => Clustered ? slots.Values.Sum() : null;

    /// <summary>Whether this is a cluster node (a coordinator tested in a plain actor system has no members to follow).</summary>
    private bool Clustered => ((ExtendedActorSystem)Context.System).Provider is ClusterActorRefProvider;

    protected override void PreStart()
    {
        if (Clustered) Akka.Cluster.Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents,
            typeof(ClusterEvent.MemberUp), typeof(ClusterEvent.MemberRemoved));
        base.PreStart();
    }

    /// <summary>A node came or went: status.json of the runs going shows whether they wait for one.</summary>
    private void Hosts(Action change)
    {
        change();
        foreach (var r in state.Active) WriteStatus(r, throttle: false);
        Admit();
    }

    /// <summary>Queued runs take the free slots, oldest first; each admitted run's entities start.</summary>
    private void Admit()
    {
        foreach (var e in RunDecisions.Admit(state, Slots(), DateTime.UtcNow))
            PersistAndSnapshot(e, () =>
            {
                var r = state.Runs[e.RunId];
                Dir(e.RunId).Event("admitted: a slot is free");
                WriteStatus(r, throttle: false);
                StartEntities(r);
            });
    }

    private IReadOnlySet<string> HostedKinds() => Clustered ? hosts.Values.SelectMany(k => k).ToHashSet() : EntityKinds.All.ToHashSet();

    /// <summary>Members coming and going change what is hosted and how many runs fit.</summary>
    private void ReceiveMembership()
    {
        Command<ClusterEvent.MemberUp>(m => Hosts(() =>
        {
            hosts[m.Member.Address] = m.Member.Roles.Where(EntityKinds.All.Contains).ToHashSet();
            slots[m.Member.Address] = Roles.SlotsOf(m.Member.Roles);
            left.Remove(HostPort(m.Member.Address));
        }));
        Command<ClusterEvent.MemberRemoved>(m => Hosts(() =>
        {
            hosts.Remove(m.Member.Address);
            slots.Remove(m.Member.Address);
            if (m.Member.Roles.Contains(Roles.Gpu)) left[HostPort(m.Member.Address)] = DateTime.UtcNow;
        }));
    }

    /// <summary>GPU nodes removed from the cluster lately, by host:port (one that joins again is taken off).</summary>
    private readonly Dictionary<string, DateTime> left = [];

    /// <summary>How long a node that left is named in a waiting run's status.</summary>
    private static readonly TimeSpan LeftShownFor = TimeSpan.FromMinutes(2);

    private static string HostPort(Address a) => $"{a.Host}:{a.Port}";

    /// <summary>The GPU nodes that left within <see cref="LeftShownFor"/>, and how long ago.</summary>
    private IReadOnlyDictionary<string, TimeSpan> LeftLately()
    {
        var now = DateTime.UtcNow;
        foreach (var gone in left.Where(x => now - x.Value > LeftShownFor).Select(x => x.Key).ToList()) left.Remove(gone);
        return left.ToDictionary(x => x.Key, x => now - x.Value);
    }
}
