using System.Collections.Immutable;
using Akka.Actor;
using Akka.Cluster;
using Akka.Configuration;
using Cluster.Contracts.Runs;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The shard allocation strategy on a real one-node cluster in pool "east", two slots: where it
/// places a run's shard when the run coordinator does not answer, how it puts it back once it does,
/// and how it weighs a node's load by the runs that hold a slot there.
/// </summary>
public sealed class LayoutAllocationTests() : Akka.TestKit.Xunit2.TestKit(ConfigurationFactory.ParseString("""
    akka.actor.provider = cluster
    akka.remote.dot-netty.tcp.hostname = 127.0.0.1
    akka.remote.dot-netty.tcp.port = 0
    akka.cluster.roles = ["gpu", "student", "pool:east", "slots:2"]
    akka.loglevel = WARNING
    """), "layout"), IDisposable
{
    private readonly string store = Path.Combine(Path.GetTempPath(), $"cd-layout-{Guid.NewGuid():N}");

    /// <summary>This node up as a one-node cluster, and the student kind's strategy asking a probe for layouts.</summary>
    private (LayoutAllocationStrategy Strategy, Akka.TestKit.TestProbe Coordinator) OnOneNodeCluster()
    {
        var cluster = Akka.Cluster.Cluster.Get(Sys);
        cluster.Join(cluster.SelfAddress);
        AwaitCondition(() => cluster.State.Members.Any(m => m.Status == MemberStatus.Up), TimeSpan.FromSeconds(30));
        var coordinator = CreateTestProbe();
        // which runs hold a slot: asked at every allocation, answered in AnswerBusy where a test weighs load
        coordinator.IgnoreMessages<GetBusyRuns>();
        var services = new NodeServices(new NodeOptions
        {
            Persistence = PersistenceOptions.Sqlite(Path.Combine(store, "unused.db")), StoreDir = store, RunsDir = store,
        }) { Coordinator = coordinator };
        return (new LayoutAllocationStrategy(Sys, services, "student"), coordinator);
    }

    [Fact]
    public async Task Should_place_by_load_while_the_coordinator_is_silent_and_move_the_shard_to_its_pool_once_it_answers()
    {
        var (strategy, coordinator) = OnOneNodeCluster();
        var east = CreateTestProbe().Ref;   // a region on this node: pool east
        // a region on a node outside every pool (not a member: no pool roles)
        var elsewhere = ((ExtendedActorSystem)Sys).Provider.ResolveActorRef("akka.tcp://layout@127.0.0.1:1/system/sharding/student");
        IImmutableDictionary<IActorRef, IImmutableList<string>> Allocations(params string[] onElsewhere) =>
            ImmutableDictionary<IActorRef, IImmutableList<string>>.Empty
                .Add(east, ImmutableList<string>.Empty).Add(elsewhere, onElsewhere.ToImmutableList());

        // the coordinator is silent (failing over): placed by load; both are empty, and the run and node hash picks elsewhere
        var placing = strategy.AllocateShard(elsewhere, "r1/0", Allocations());
        coordinator.ExpectMsg<GetRunLayout>(m => m.RunId == "r1");
        Assert.Equal(elsewhere, await placing);

        // the next rebalance asks again; once the answer (students in east) is in, a rebalance moves it
        Assert.Empty(await strategy.Rebalance(Allocations("r1/0"), ImmutableHashSet<string>.Empty));
        coordinator.ExpectMsg<GetRunLayout>(m => m.RunId == "r1");
        coordinator.Reply(new RunLayout("r1", true, null, null, ["east"]));
        await AwaitAssertAsync(async () =>
            Assert.Equal(["r1/0"], await strategy.Rebalance(Allocations("r1/0"), ImmutableHashSet<string>.Empty)), TimeSpan.FromSeconds(10));
        // and a new shard of that run goes to its pool straight away, without asking
        Assert.Equal(east, await strategy.AllocateShard(elsewhere, "r1/1", Allocations("r1/0")));
        coordinator.ExpectNoMsg(TimeSpan.FromMilliseconds(200));
    }

    [Fact]
    public async Task Should_move_a_second_replica_off_a_shared_node_once_another_node_holds_none_of_its_run()
    {
        var (strategy, coordinator) = OnOneNodeCluster();
        var up = CreateTestProbe().Ref;   // a region on this node
        // a region of another node (an unreachable member's would be passed over: LayoutAllocationStrategy.Healthy)
        var other = ((ExtendedActorSystem)Sys).Provider.ResolveActorRef("akka.tcp://layout@127.0.0.1:1/system/sharding/student");
        IImmutableDictionary<IActorRef, IImmutableList<string>> Allocations(string[] onOther, string[] onUp) =>
            ImmutableDictionary<IActorRef, IImmutableList<string>>.Empty
                .Add(other, onOther.ToImmutableList()).Add(up, onUp.ToImmutableList());
        var none = ImmutableHashSet<string>.Empty;

        // a run with no pools: while only the other region was registered, both replicas went to it
        var placing = strategy.AllocateShard(other, "r2/0", ImmutableDictionary<IActorRef, IImmutableList<string>>.Empty.Add(other, ImmutableList<string>.Empty));
        coordinator.ExpectMsg<GetRunLayout>(m => m.RunId == "r2");
        coordinator.Reply(new RunLayout("r2", true, null, null, []));
        Assert.Equal(other, await placing);
        // this node's region holds none of r2: the higher replica moves, and only it
        Assert.Equal(["r2/1"], await strategy.Rebalance(Allocations(["r2/0", "r2/1", "x/0"], []), none));
        Assert.Equal(["r2/1"], await strategy.Rebalance(Allocations(["r2/0", "r2/1"], ["x/0", "x/1"]), none));
        // not while it is being moved, not once spread, and not when every region already has one of the run
        Assert.Empty(await strategy.Rebalance(Allocations(["r2/0", "r2/1"], []), none.Add("r2/1")));
        Assert.Empty(await strategy.Rebalance(Allocations(["r2/0"], ["r2/1"]), none));
        Assert.Empty(await strategy.Rebalance(Allocations(["r2/0", "r2/1"], ["r2/2"]), none));
        // and the other way round
        Assert.Equal(["r2/1"], await strategy.Rebalance(Allocations([], ["r2/0", "r2/1"]), none));
        // and the allocation that follows puts it on the region without the run
        Assert.Equal(up, await strategy.AllocateShard(other, "r2/1", Allocations(["r2/0"], [])));
    }

    /// <summary>
    /// A node's load is the runs that hold a slot with a shard there, for its slots: shards of ended
    /// runs are not load (sharding keeps them allocated), and a two-slot node takes a second run
    /// before a one-slot node takes its second. A coordinator that does not say which runs are busy
    /// leaves every shard counting.
    /// </summary>
    [Fact]
    public async Task Should_weigh_a_node_by_the_runs_that_hold_its_slots_not_by_the_shards_of_ended_runs()
    {
        var cluster = Akka.Cluster.Cluster.Get(Sys);
        cluster.Join(cluster.SelfAddress);
        AwaitCondition(() => cluster.State.Members.Any(m => m.Status == MemberStatus.Up), TimeSpan.FromSeconds(30));
        var coordinator = CreateTestProbe();
        var strategy = new LayoutAllocationStrategy(Sys, new NodeServices(new NodeOptions
        {
            Persistence = PersistenceOptions.Sqlite(Path.Combine(store, "unused.db")), StoreDir = store, RunsDir = store,
        }) { Coordinator = coordinator }, "student");
        var here = CreateTestProbe().Ref;   // this node: two slots
        var other = ((ExtendedActorSystem)Sys).Provider.ResolveActorRef("akka.tcp://layout@127.0.0.1:1/system/sharding/student");   // one slot
        IImmutableDictionary<IActorRef, IImmutableList<string>> Allocations(string[] onHere, string[] onOther) =>
            ImmutableDictionary<IActorRef, IImmutableList<string>>.Empty
                .Add(here, onHere.ToImmutableList()).Add(other, onOther.ToImmutableList());
        async Task<IActorRef> Place(string shard, IImmutableDictionary<IActorRef, IImmutableList<string>> allocations, string[]? busy)
        {
            var placing = strategy.AllocateShard(here, shard, allocations);
            for (var asked = 0; asked < 2; asked++)
            {
                var m = coordinator.ExpectMsg<object>(TimeSpan.FromSeconds(10));
                if (m is GetRunLayout l) coordinator.Reply(new RunLayout(l.RunId, true, null, null, []));
                else if (m is GetBusyRuns && busy is not null) coordinator.Reply(new BusyRuns(busy));
            }
            return await placing;
        }

        // this node holds three ended runs' shards, the other one live run's: the new run comes here
        var ended = Allocations(["old1/0", "old2/0", "old3/0"], ["live/0"]);
        Assert.Equal(here, await Place("new/0", ended, ["live"]));
        // a coordinator that does not say which runs are busy: every shard counts, as before
        Assert.Equal(other, await Place("new2/0", ended, null));

        // one busy run on each: this node has a slot free, the other none
        Assert.Equal(here, await Place("c/0", Allocations(["a/0"], ["b/0"]), ["a", "b"]));
        // one busy run here (of two slots), none there (of one): there first, then here
        Assert.Equal(other, await Place("d/0", Allocations(["a/0"], []), ["a"]));
        Assert.Equal(here, await Place("e/0", Allocations(["a/0"], ["d/0"]), ["a", "d"]));
        // a paused run's shard is no load either
        Assert.Equal(here, await Place("f/0", Allocations(["paused/0", "a/0"], ["d/0"]), ["a", "d"]));
    }

    void IDisposable.Dispose()
    {
        Shutdown();
        try { Directory.Delete(store, true); } catch (IOException) { }
    }
}
