using Akka.Actor;
using Akka.Cluster;
using Akka.Event;
using Cluster.Node.Configuration;

namespace Cluster.Node.Hosting;

/// <summary>
/// On a node that is not a seed: notices that its cluster has lost every seed while a seed process
/// is up again at one of the configured addresses (it was restarted, alone or with the others, and
/// formed a new cluster), and then shuts this node down with <see cref="SeedsLost"/> so that its
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

    public static Props GetProps(IReadOnlyList<string> seeds, string systemName, TimeSpan after) =>
        Props.Create(() => new SeedWatch(seeds, systemName, after));

    private readonly ILoggingAdapter log = Context.GetLogger();
    private readonly HashSet<Member> seedsUp = [];
    private readonly HashSet<UniqueAddress> unreachable = [];
    private DateTime? lostSince;
    private bool leaving;

    public ITimerScheduler Timers { get; set; } = null!;

    public SeedWatch(IReadOnlyList<string> seeds, string systemName, TimeSpan after)
    {
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
            foreach (var s in seeds)
                Context.ActorSelection($"akka.tcp://{systemName}@{s}/system/cluster/core/daemon").Tell(new Identify(s));
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

    private void Update()
    {
        var anyUp = seedsUp.Any(m => !unreachable.Contains(m.UniqueAddress));
        if (anyUp) lostSince = null;
        else lostSince ??= DateTime.UtcNow;
    }

    protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);
}
