using Akka.Actor;
using Akka.Cluster;
using Akka.Cluster.Sharding;
using Akka.Cluster.Tools.Singleton;
using Akka.Event;
using Akka.Management.Cluster.Bootstrap;
using Cluster.Contracts;
using Cluster.Node.Actors;
using Cluster.Node.Configuration;
using Microsoft.Data.Sqlite;

namespace Cluster.Node.Hosting;

/// <summary>
/// One cluster node: the actor system with our configuration, the shard regions of the three
/// entity kinds (hosted on gpu nodes, proxies elsewhere) and the run coordinator singleton (hosted
/// on seed nodes, a proxy everywhere).
/// </summary>
public sealed class ClusterNode : IAsyncDisposable
{
    private ClusterNode(ActorSystem system, NodeServices services)
    {
        System = system;
        Services = services;
    }

    public ActorSystem System { get; }
    public NodeServices Services { get; }
    public IActorRef Coordinator => Services.Coordinator;
    public IActorRef Sweeps => Services.Sweeps;
    public Address Address => Akka.Cluster.Cluster.Get(System).SelfAddress;

    /// <summary>
    /// /health/ready's answer for a node that may not exist yet: null when it is ready (a member
    /// that is up, with every hosted shard region registered, which <see cref="StartAsync"/> waits
    /// for), else why not.
    /// </summary>
    public static string? NotReady(ClusterNode? node)
    {
        if (node is null) return "joining the cluster";
        if (node.System.WhenTerminated.IsCompleted) return "the actor system has stopped";
        var self = Akka.Cluster.Cluster.Get(node.System).SelfMember;
        return self.Status == MemberStatus.Up ? null : $"this member is {self.Status.ToString().ToLowerInvariant()}";
    }

    public static async Task<ClusterNode> StartAsync(NodeOptions options, TimeSpan? joinTimeout = null)
    {
        options = options with { Roles = Roles.Expand(options.Roles) };
        await PersistenceCheck.EnsureReachableAsync(options.Persistence);
        // sharding's and the singleton's serializers must be known before the first message from a
        // peer arrives, not only once ClusterSharding.Get runs
        var config = HoconBuilder.Build(options)
            .WithFallback(ClusterSharding.DefaultConfig())
            .WithFallback(ClusterSingleton.DefaultConfig());
        var system = NodeActorSystem.Create(options.SystemName, config, options.Tls);
        var services = new NodeServices(options);
        var cluster = Akka.Cluster.Cluster.Get(system);
        services.NodeName = $"{cluster.SelfAddress.Host}:{cluster.SelfAddress.Port}";
        // a node that cannot start leaves the cluster and frees its ports rather than run half-started
        async Task Abandon()
        {
            await system.Terminate();
            if (services.Bootstrap is { } b) await b.DisposeAsync();
        }
        try { await PersistenceSchema.InitializeAsync(system, options.Persistence, TimeSpan.FromSeconds(60)); }
        catch (PersistenceUnavailableException)
        {
            await Abandon();
            throw;
        }
        if (options.Embedded) cluster.Join(cluster.SelfAddress);   // a cluster of one
        else if (options.Discovery is { } discovery)
        {
            // the contact points probe each other's endpoint, then join a cluster or form one
            try { services.Bootstrap = await Http.BootstrapEndpoint.StartAsync(system, options.Hostname, discovery.ManagementPort); }
            catch (InvalidOperationException)
            {
                await Abandon();
                throw;
            }
            await ClusterBootstrap.Get(system).Start();
        }

        var joined = new TaskCompletionSource();
        cluster.RegisterOnMemberUp(() => joined.TrySetResult());
        var timeout = joinTimeout ?? TimeSpan.FromSeconds(60);
        if (await Task.WhenAny(joined.Task, Task.Delay(timeout)) != joined.Task)
        {
            await Abandon();
            throw new TimeoutException(options.Discovery is { } d
                ? $"could not join a cluster through {d.Method} discovery ({(d.Endpoints.Count > 0 ? string.Join(", ", d.Endpoints) : d.LabelSelector)}) within {timeout.TotalSeconds:F0} s"
                : $"could not join the cluster at {string.Join(", ", options.Seeds)} within {timeout.TotalSeconds:F0} s");
        }

        if (options.Roles.Contains(EntityKinds.Generator))
        {
            // batches a killed generator had staged and not stored (off the start-up path: a shared store can be large)
            var sweepLog = Logging.GetLogger(system, "blob-store");
            _ = Task.Run(() =>
            {
                try
                {
                    var n = services.Blobs.SweepStaged(TimeSpan.FromHours(1));
                    if (n > 0) sweepLog.Info("removed {0} staged blob files older than an hour from {1} (left by a killed process)", n, services.Blobs.Root);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { sweepLog.Warning("could not sweep staged blob files in {0}: {1}", services.Blobs.Root, e.Message); }
            });
        }

        var sharding = ClusterSharding.Get(system);
        var extractor = new EntityMessageExtractor(options.NumberOfShards);
        // each kind's shards live only on nodes with that kind as a role (the layout); elsewhere a proxy
        var hosted = new List<(string Kind, IActorRef Region)>();
        IActorRef Region(string kind, Func<string, Props> props)
        {
            if (!options.Roles.Contains(kind)) return sharding.StartProxy(kind, kind, extractor);
            var region = sharding.Start(kind, props, ClusterShardingSettings.Create(system).WithRole(kind).WithRememberEntities(true), extractor,
                new LayoutAllocationStrategy(system, services, kind), PoisonPill.Instance);
            hosted.Add((kind, region));
            return region;
        }
        services.Generators = Region(EntityKinds.Generator, id => SourceEntity.GetProps(id, services));
        services.Teachers = Region(EntityKinds.Teacher, id => TeacherEntity.GetProps(id, services));
        services.Students = Region(EntityKinds.Student, id => StudentEntity.GetProps(id, services));
        // generators send batches and students exchange gradients: a seed-only node needs no plane
        if (options.DataPort is { } dataPort && (options.Roles.Contains(EntityKinds.Generator) || options.Roles.Contains(EntityKinds.Student)))
        {
            var log = Logging.GetLogger(system, "data-plane");
            var students = services.Students;
            // received messages go to the local region, which forwards them if the entity moved
            try
            {
                services.DataPlane = Transport.DataPlane.Start(options.Hostname, dataPort, options.Hostname, options.MaxMessageBytes,
                    deliver: m => students.Tell(m), fallback: m => students.Tell(m), warn: w => log.Warning(w), info: i => log.Info(i), tls: options.Tls);
            }
            catch (InvalidOperationException)
            {
                // e.g. --data-port taken
                await Abandon();
                throw;
            }
            log.Info("data plane listening at {0}", services.DataPlane.Endpoint);
        }

        if (!options.Roles.Contains(Roles.Seed) && !options.Embedded && options.SeedLossRejoinAfter is { } after)
            system.ActorOf(SeedWatch.GetProps(options, after), "seed-watch");
        if (options.Roles.Contains(Roles.Seed))
            system.ActorOf(ClusterSingletonManager.Props(RunCoordinator.GetSupervisedProps(services), PoisonPill.Instance,
                ClusterSingletonManagerSettings.Create(system).WithRole(Roles.Seed)), RunCoordinator.Name);
        services.Coordinator = system.ActorOf(ClusterSingletonProxy.Props($"/user/{RunCoordinator.Name}",
            ClusterSingletonProxySettings.Create(system).WithRole(Roles.Seed)), "run-coordinator-proxy");
        if (options.Roles.Contains(Roles.Seed))
            system.ActorOf(ClusterSingletonManager.Props(SweepCoordinator.GetSupervisedProps(services), PoisonPill.Instance,
                ClusterSingletonManagerSettings.Create(system).WithRole(Roles.Seed)), SweepCoordinator.Name);
        services.Sweeps = system.ActorOf(ClusterSingletonProxy.Props($"/user/{SweepCoordinator.Name}",
            ClusterSingletonProxySettings.Create(system).WithRole(Roles.Seed)), "sweep-coordinator-proxy");
        // "up" means ready to host entities: until a region has registered with its kind's shard
        // coordinator, shards allocated meanwhile go to other nodes (two replicas of a student on one)
        foreach (var (kind, region) in hosted) await WaitUntilRegisteredAsync(system, kind, region, cluster.SelfAddress, TimeSpan.FromSeconds(60));
        return new ClusterNode(system, services);
    }

    private static async Task WaitUntilRegisteredAsync(ActorSystem system, string kind, IActorRef region, Address self, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                var known = await region.Ask<CurrentRegions>(GetCurrentRegions.Instance, TimeSpan.FromSeconds(5));
                if (known.Regions.Contains(self)) return;
            }
            catch (AskTimeoutException) { }
            await Task.Delay(200);
        }
        Logging.GetLogger(system, "cluster-node").Warning("the {0} shard region is not registered with its coordinator after {1:F0} s; going on (shards may be placed on other nodes until it is)",
            kind, timeout.TotalSeconds);
    }

    /// <summary>Why <see cref="WaitForShutdownAsync"/> returned.</summary>
    public enum Ending
    {
        /// <summary>Ctrl+C, SIGTERM (the pod's shutdown) or the token: the host should exit.</summary>
        Requested,
        /// <summary>The node left because its seeds formed a new cluster (<see cref="SeedWatch"/>): join again.</summary>
        SeedsLost,
        /// <summary>The actor system ended by itself (the node was downed, e.g. on the minority side of a partition).</summary>
        Terminated,
    }

    /// <summary>Until Ctrl+C, SIGTERM, the token, or the actor system ending; disposing then leaves the cluster.</summary>
    public async Task<Ending> WaitForShutdownAsync(CancellationToken ct = default)
    {
        var stop = new TaskCompletionSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.TrySetResult(); };
        AppDomain.CurrentDomain.ProcessExit += (_, _) => stop.TrySetResult();
        using var registration = ct.Register(() => stop.TrySetResult());
        await Task.WhenAny(stop.Task, System.WhenTerminated);
        // SIGTERM also reaches Akka's own CLR hook, which may end the actor system before the token is
        // cancelled: that is a stop asked for too, not a node downed that should join again
        var reason = CoordinatedShutdown.Get(System).ShutdownReason;
        if (stop.Task.IsCompleted || reason is CoordinatedShutdown.ClrExitReason) return Ending.Requested;
        return reason is SeedWatch.SeedsLost ? Ending.SeedsLost : Ending.Terminated;
    }

    public async ValueTask DisposeAsync()
    {
        await CoordinatedShutdown.Get(System).Run(CoordinatedShutdown.ClrExitReason.Instance);
        if (Services.DataPlane is { } plane) await plane.DisposeAsync();
        if (Services.Bootstrap is { } bootstrap) await bootstrap.DisposeAsync();
    }
}

/// <summary>
/// The id is the message's own EntityId. One shard per entity ("run/index" in its kind's region):
/// a run's few entities are placed one by one by its spec's layout (<see cref="LayoutAllocationStrategy"/>),
/// and two replicas of a student never share a shard, hence a node, by accident of a hash.
/// </summary>
public sealed class EntityMessageExtractor(int shards) : HashCodeMessageExtractor(shards)
{
    public override string? EntityId(object message) => (message as IEntityMessage)?.EntityId;

    public override string ShardId(string entityId, object? messageHint = null) =>
        LayoutAllocationStrategy.ShardOf(Contracts.EntityId.Parse(entityId));
}

/// <summary>Fails early, with the reason, when the database cannot be reached (instead of Akka retrying quietly).</summary>
public static class PersistenceCheck
{
    public static async Task EnsureReachableAsync(PersistenceOptions p)
    {
        try
        {
            if (p.Provider == "sqlite")
            {
                var builder = new SqliteConnectionStringBuilder(p.ConnectionString);
                var dir = Path.GetDirectoryName(builder.DataSource);
                if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
                await using var c = new SqliteConnection(p.ConnectionString);
                await c.OpenAsync();
                // WAL: readers do not block the journal's writer (several plugins share the file)
                await using var cmd = c.CreateCommand();
                cmd.CommandText = "PRAGMA journal_mode=WAL;";
                await cmd.ExecuteNonQueryAsync();
            }
            else
            {
                await using var c = new Npgsql.NpgsqlConnection(p.ConnectionString);
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
                await c.OpenAsync(cts.Token);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new PersistenceUnavailableException($"the {p.Provider} journal is unreachable ({p.RedactedConnectionString}): {e.Message}", e);
        }
        catch (OperationCanceledException e)
        {
            throw new PersistenceUnavailableException($"the {p.Provider} journal did not answer within 15 s ({p.RedactedConnectionString})", e);
        }
    }
}

public sealed class PersistenceUnavailableException(string message, Exception inner) : Exception(message, inner);
