using System.Collections.Concurrent;
using System.Collections.Immutable;
using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Cluster.Contracts.Runs;
using Cluster.Node.Configuration;
using Distill.Engine.Specs;

namespace Cluster.Node.Hosting;

/// <summary>
/// Places each run's shards (one per entity: "run/index" within a kind's region) by the run's spec
/// layout: on the least-loaded region of a node in the pool the spec names for that kind and
/// replica (a node's pools are its "pool:NAME" roles, from `Cluster.GpuNode join --pool NAME`). A
/// node's load is the runs holding a slot that have a shard there, for its slots (`--slots`).
/// The layout is asked of the run coordinator once per run and cached. With no node of the pool
/// up, or no layout, or the coordinator silent, the least-loaded region anywhere: an entity runs
/// somewhere rather than stall (the run survives the loss of a whole pool); a layout the coordinator
/// did not give in time is asked for again at the next rebalance, which then moves the shard. Rebalancing moves only
/// shards that sit outside their pool while a node of it is up, and a run's second shard on a node
/// while an allowed node holds none of that run (replicas placed before the other node registered),
/// so training work is not shuffled between nodes for balance alone (a moved student steps back to
/// its last checkpoint).
/// </summary>
public sealed class LayoutAllocationStrategy(ActorSystem system, NodeServices services, string kind) : IShardAllocationStrategy
{
    public const string PoolRolePrefix = "pool:";

    private static readonly TimeSpan AskTimeout = TimeSpan.FromSeconds(3);
    private readonly ConcurrentDictionary<string, RunLayout> layouts = new();
    private readonly ILoggingAdapter log = Logging.GetLogger(system, typeof(LayoutAllocationStrategy));

    /// <summary>Shard id of an entity: one shard per entity, named by run and index, so a shard belongs to one run.</summary>
    public static string ShardOf(Contracts.EntityId id) => $"{id.RunId}/{id.Index}";

    private static (string Run, int Index)? Parse(string shardId)
    {
        var at = shardId.LastIndexOf('/');
        return at > 0 && int.TryParse(shardId.AsSpan(at + 1), out var i) ? (shardId[..at], i) : null;
    }

    public async Task<IActorRef> AllocateShard(IActorRef requester, string shardId, IImmutableDictionary<IActorRef, IImmutableList<string>> currentShardAllocations)
    {
        var asked = BusyRunsAsync();
        var pool = await PoolOf(shardId);
        var busy = await asked;
        // a dead node's region stays listed until the node is removed: not there, while another will do
        var candidates = currentShardAllocations.Keys.Where(Healthy).ToList();
        if (candidates.Count == 0) candidates = currentShardAllocations.Keys.ToList();
        if (pool is not null)
        {
            var inPool = candidates.Where(r => PoolsOf(r).Contains(pool)).ToList();
            if (inPool.Count > 0) candidates = inPool;
            else log.Warning("{0} shard {1}: no node of pool '{2}' is up; placed on another node until one is", kind, shardId, pool);
        }
        if (candidates.Count == 0) return requester;
        lock (placed)
        {
            // allocations run concurrently (each awaits the layout), so count the ones made here that
            // the coordinator's view does not show yet. Prefer a region with none of this run's
            // shards (two replicas of a student on two nodes), then the one whose node has the most
            // of its slots free: the runs that hold a slot (busy) with a shard there, for its slots;
            // a shard of a run that ended or is paused is no load, though sharding keeps it
            // allocated. Then the fewest shards; among equals the same node for every kind of a run
            // (a hash of run and node), so that a run's entities stay together.
            var allocated = currentShardAllocations.Values.SelectMany(v => v).ToHashSet();
            foreach (var (shard, region) in placed.ToList())
                if (allocated.Contains(shard) || !currentShardAllocations.ContainsKey(region)) placed.Remove(shard);
            var run = Parse(shardId)?.Run;
            IEnumerable<string> On(IActorRef r) => currentShardAllocations[r].Concat(placed.Where(kv => kv.Value.Equals(r)).Select(kv => kv.Key));
            var chosen = candidates
                .OrderBy(r => run is null ? 0 : On(r).Count(x => Parse(x)?.Run == run))
                .ThenBy(r => Load(On(r), busy) / (double)Math.Max(1, SlotsOf(r)))
                .ThenBy(r => On(r).Count())
                .ThenBy(r => Tiebreak(run ?? shardId, r))
                .ThenBy(r => r.Equals(requester) ? 0 : 1)
                .First();
            placed[shardId] = chosen;
            return chosen;
        }
    }

    /// <summary>The runs with a shard among these that hold a slot (busy; all of them when the coordinator did not say).</summary>
    private static int Load(IEnumerable<string> shards, IReadOnlySet<string>? busy) =>
        shards.Select(x => Parse(x)?.Run ?? x).Where(r => busy is null || busy.Contains(r)).Distinct().Count();

    /// <summary>A number for (run, node) that is the same in every process and every kind's strategy.</summary>
    private static uint Tiebreak(string run, IActorRef region)
    {
        var text = run + "@" + region.Path.Address;
        var hash = 2166136261u;
        foreach (var c in text) hash = (hash ^ c) * 16777619u;
        return hash;
    }

    /// <summary>The runs that hold a slot now, from the coordinator; null when it does not answer in time (then every shard counts).</summary>
    private async Task<IReadOnlySet<string>?> BusyRunsAsync()
    {
        try { return await services.Coordinator.Ask<object>(new GetBusyRuns(), AskTimeout) is BusyRuns b ? b.RunIds.ToHashSet() : null; }
        catch (Exception e) when (e is AskTimeoutException or TaskCanceledException) { return null; }
    }

    /// <summary>The slots of a region's node (its "slots:N" role; one for a node this one does not know as a member yet).</summary>
    private int SlotsOf(IActorRef region) => MemberOf(region) is { } member ? Math.Max(1, Roles.SlotsOf(member.Roles)) : 1;

    /// <summary>The cluster member whose node a region is on (this node for a local region); null for one not known as a member yet.</summary>
    private Akka.Cluster.Member? MemberOf(IActorRef region)
    {
        var cluster = Akka.Cluster.Cluster.Get(system);
        var address = region.Path.Address.HasLocalScope ? cluster.SelfAddress : region.Path.Address;
        return cluster.State.Members.FirstOrDefault(m => m.Address.Equals(address));
    }

    /// <summary>Shards this strategy placed that the coordinator's allocations may not list yet.</summary>
    private readonly Dictionary<string, IActorRef> placed = [];

    public Task<IImmutableSet<string>> Rebalance(IImmutableDictionary<IActorRef, IImmutableList<string>> currentShardAllocations, IImmutableSet<string> rebalanceInProgress)
    {
        var regionsInPool = new Dictionary<string, bool>();
        bool PoolUp(string pool) => regionsInPool.TryGetValue(pool, out var up) ? up
            : regionsInPool[pool] = currentShardAllocations.Keys.Any(r => PoolsOf(r).Contains(pool));
        var moves = ImmutableHashSet.CreateBuilder<string>();
        foreach (var (region, shards) in currentShardAllocations)
        {
            var pools = PoolsOf(region);
            foreach (var shard in shards)
            {
                if (moves.Count >= 2) break;   // a few at a time: each move hands a shard off and restarts its entity
                if (rebalanceInProgress.Contains(shard)) continue;
                if (CachedPoolOf(shard) is not { } pool)
                {
                    // placed by load because the coordinator was silent then: ask again, so that a
                    // later round moves it to its pool
                    if (Parse(shard) is { } p && !layouts.ContainsKey(p.Run)) FetchInBackground(p.Run);
                    continue;
                }
                if (!pools.Contains(pool) && PoolUp(pool)) moves.Add(shard);
            }
        }
        foreach (var shard in Crowded(currentShardAllocations, rebalanceInProgress, PoolUp))
            if (moves.Count < 2) moves.Add(shard);
        if (moves.Count > 0) log.Info("{0}: moving shards {1} to their layout's pools or off a node another of their run's shards shares", kind, string.Join(", ", moves));
        return Task.FromResult<IImmutableSet<string>>(moves.ToImmutable());
    }

    /// <summary>
    /// Shards that share a node with another shard of their run (two replicas of a student placed
    /// while only one node had registered) where a region their pool allows holds none of that run:
    /// one per run and node, so shards spread without ever swapping back and forth.
    /// </summary>
    private IEnumerable<string> Crowded(IImmutableDictionary<IActorRef, IImmutableList<string>> allocations,
        IImmutableSet<string> inProgress, Func<string, bool> poolUp)
    {
        foreach (var (region, shards) in allocations)
            foreach (var group in shards.Where(s => !inProgress.Contains(s)).Select(s => (Shard: s, Key: Parse(s)))
                         .Where(x => x.Key is { } k && layouts.ContainsKey(k.Run)).GroupBy(x => x.Key!.Value.Run))
            {
                if (group.Count() < 2) continue;
                var last = group.OrderBy(x => x.Key!.Value.Index).Last().Shard;
                var pool = CachedPoolOf(last);
                bool Allowed(IActorRef r) => pool is null || !poolUp(pool) || PoolsOf(r).Contains(pool);
                if (allocations.Any(kv => !kv.Key.Equals(region) && Allowed(kv.Key) && Healthy(kv.Key) && !kv.Value.Any(s => Parse(s)?.Run == group.Key)))
                    yield return last;
            }
    }

    /// <summary>Runs whose layout is being asked for outside an allocation (one ask per run at a time).</summary>
    private readonly ConcurrentDictionary<string, bool> fetching = new();

    private void FetchInBackground(string run)
    {
        if (!fetching.TryAdd(run, true)) return;
        FetchLayoutAsync(run).ContinueWith(t =>
        {
            _ = t.Exception;   // a silent coordinator again: the next rebalance asks again
            fetching.TryRemove(run, out _);
        }, TaskScheduler.Default);
    }

    /// <summary>Asks the coordinator for a run's layout and caches it once known (a spec's layout never changes; an unknown run may be submitted yet).</summary>
    private async Task<RunLayout> FetchLayoutAsync(string run)
    {
        // (a coordinator waiting for its journal answers RunRejected: as silent as one that does not answer)
        if (await services.Coordinator.Ask<object>(new GetRunLayout(run), AskTimeout) is not RunLayout layout)
            throw new AskTimeoutException($"the run coordinator cannot say where run {run} goes now");
        if (layout.Known) layouts[run] = layout;
        return layout;
    }

    private string? CachedPoolOf(string shardId) =>
        Parse(shardId) is { } p && layouts.TryGetValue(p.Run, out var l) && l.Known ? Pick(l, p.Index) : null;

    private async Task<string?> PoolOf(string shardId)
    {
        if (Parse(shardId) is not { } p) return null;
        if (!layouts.TryGetValue(p.Run, out var layout))
        {
            try { layout = await FetchLayoutAsync(p.Run); }
            catch (Exception e) when (e is AskTimeoutException or TaskCanceledException)
            {
                log.Warning("{0} shard {1}: the run coordinator did not answer where run {2} goes; placed by load", kind, shardId, p.Run);
                return null;
            }
        }
        return layout.Known ? Pick(layout, p.Index) : null;
    }

    private string? Pick(RunLayout l, int index) =>
        new LayoutSpec { Generator = l.Generator, Teacher = l.Teacher, Student = l.Students }.PoolOf(kind, index);

    /// <summary>
    /// Whether a region's node may take shards: not a member that is unreachable or no longer up (a
    /// dead node's region stays listed until the node is removed). A region of an address this
    /// node does not know as a member yet is taken on the coordinator's word.
    /// </summary>
    private bool Healthy(IActorRef region)
    {
        if (region.Path.Address.HasLocalScope) return true;
        var state = Akka.Cluster.Cluster.Get(system).State;
        if (state.Unreachable.Any(m => m.Address.Equals(region.Path.Address))) return false;
        var member = state.Members.FirstOrDefault(m => m.Address.Equals(region.Path.Address));
        return member is null || member.Status == Akka.Cluster.MemberStatus.Up;
    }

    /// <summary>The pools of the node a shard region lives on (a local region is this node's).</summary>
    private ImmutableHashSet<string> PoolsOf(IActorRef region) => MemberOf(region) is { } member
        ? member.Roles.Where(r => r.StartsWith(PoolRolePrefix, StringComparison.Ordinal)).Select(r => r[PoolRolePrefix.Length..]).ToImmutableHashSet()
        : [];
}
