using Akka.Actor;
using Akka.Cluster;
using Akka.Discovery;
using Akka.Event;
using Akka.Management.Cluster.Bootstrap.ContactPoint;
using Cluster.Node.Configuration;
using Newtonsoft.Json;

namespace Cluster.Node.Hosting;

/// <summary>
/// On a node that is not a seed: notices that its cluster has lost every seed while a seed process
/// is up again at one of the configured addresses, or among the contact points discovery finds (it
/// was restarted, alone or with the others, and formed a new cluster), and then shuts this node down with <see cref="SeedsLost"/> so that its
/// host joins again (`Cluster.GpuNode join` does). While no seed answers, the node stays and its
/// entities keep training.
/// </summary>
public sealed class SeedWatch : ReceiveActor, IWithTimers
{
    /// <summary>The shutdown reason: the node left to rejoin the seeds' new cluster.</summary>
    public sealed class SeedsLost : CoordinatedShutdown.Reason
    {
        public static readonly SeedsLost Instance = new();
        private SeedsLost() { }
        public override int ExitCode => 0;
    }

    private sealed record Check
    {
        public static readonly Check Instance = new();
    }

    /// <summary>A seed-capable node in a cluster that is not this one (its address).</summary>
    private sealed record SeedElsewhere(string Address);

    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(3) };

    public static Props GetProps(NodeOptions options, TimeSpan after) => Props.Create(() => new SeedWatch(options, after));

    private readonly ILoggingAdapter log = Context.GetLogger();
    private readonly HashSet<Member> seedsUp = [];
    private readonly HashSet<UniqueAddress> unreachable = [];
    private DateTime? lostSince;
    private bool leaving;

    public ITimerScheduler Timers { get; set; } = null!;

    public SeedWatch(NodeOptions options, TimeSpan after)
    {
        var (seeds, systemName) = (options.Seeds, options.SystemName);
        var cluster = Akka.Cluster.Cluster.Get(Context.System);
        Receive<ClusterEvent.MemberUp>(m => { if (m.Member.HasRole(Roles.Seed)) seedsUp.Add(m.Member); Update(); });
        Receive<ClusterEvent.IMemberEvent>(m => { if (m is not ClusterEvent.MemberUp) seedsUp.Remove(m.Member); Update(); });
        Receive<ClusterEvent.UnreachableMember>(m => { unreachable.Add(m.Member.UniqueAddress); Update(); });
        Receive<ClusterEvent.ReachableMember>(m => { unreachable.Remove(m.Member.UniqueAddress); Update(); });
        Receive<ClusterEvent.IClusterDomainEvent>(_ => { });
        Receive<Check>(_ =>
        {
            if (leaving || lostSince is not { } since || DateTime.UtcNow - since < after) return;
            // is a seed process up, outside our cluster? (a seed of ours would be a member)
            if (options.Discovery is null)
                foreach (var s in seeds)
                    Context.ActorSelection($"{options.Protocol}://{systemName}@{s}/system/cluster/core/daemon").Tell(new Identify(s));
            else
                ContactPointElsewhere(Context.System, cluster).PipeTo(Self, success: a => a is null ? Check.Instance : new SeedElsewhere(a), failure: _ => Check.Instance);
        });
        Receive<SeedElsewhere>(e =>
        {
            if (leaving || lostSince is null) return;
            leaving = true;
            log.Warning("every seed has left this cluster, and the contact point {0} is in another: leaving to join it", e.Address);
            CoordinatedShutdown.Get(Context.System).Run(SeedsLost.Instance);
        });
        Receive<ActorIdentity>(id =>
        {
            if (leaving || id.Subject is null || lostSince is null) return;
            leaving = true;
            log.Warning("every seed has left this cluster, and a seed is up at {0} in another: leaving to join it", id.MessageId);
            CoordinatedShutdown.Get(Context.System).Run(SeedsLost.Instance);
        });
        cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents,
            typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));
        Timers.StartPeriodicTimer("check", Check.Instance, TimeSpan.FromSeconds(2));
    }

    /// <summary>
    /// A discovered contact point that is a member of a cluster without this node: its management
    /// endpoint's /bootstrap/seed-nodes names itself (selfNode) and that cluster's members.
    /// </summary>
    private static async Task<string?> ContactPointElsewhere(ActorSystem system, Akka.Cluster.Cluster cluster)
    {
        var resolved = await Akka.Discovery.Discovery.Get(system).Default.Lookup(
            new Lookup(DiscoveryOptions.ServiceName, portName: null, protocol: "tcp"), TimeSpan.FromSeconds(3));
        var self = cluster.SelfAddress;
        foreach (var target in resolved.Addresses)
        {
            try
            {
                var host = target.Address?.ToString() ?? target.Host;
                var json = await Http.GetStringAsync($"http://{host}:{target.Port ?? DiscoveryOptions.DefaultManagementPort}/bootstrap/seed-nodes");
                // Akka.Management's own contract and serializer, as its bootstrap reads it
                var answer = JsonConvert.DeserializeObject<HttpBootstrapJsonProtocol.SeedNodes>(json);
                if (answer?.Nodes is { Count: > 0 } members && members.All(m => m.Node != self)) return answer.SelfNode.ToString();
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException or JsonException) { }
        }
        return null;
    }

    private void Update()
    {
        var anyUp = seedsUp.Any(m => !unreachable.Contains(m.UniqueAddress));
        if (anyUp) lostSince = null;
        else lostSince ??= DateTime.UtcNow;
    }

    protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);
}
