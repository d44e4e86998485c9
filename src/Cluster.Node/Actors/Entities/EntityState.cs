using System.Collections.Immutable;
using Cluster.Contracts;
using Cluster.Contracts.Events;

namespace Cluster.Node.Actors;

/// <summary>
/// The small, persisted state of a generator or student entity: which run it serves, the pool of
/// stored batches (generator) and its checkpoints. Pure: events in, next state out.
/// </summary>
public sealed record EntityState(
    string? RunId,
    string? SpecYaml,
    string? TeacherBlob,
    ImmutableSortedDictionary<long, BatchStored> Pool,
    long ReleasedUpTo,
    ImmutableList<CheckpointWritten> Checkpoints,
    bool Finished,
    long? HoldAt = null)
{
    public static readonly EntityState Empty = new(null, null, null, ImmutableSortedDictionary<long, BatchStored>.Empty, 0, [], false);

    public bool Started => SpecYaml is not null;

    /// <summary>Highest sequence number ever stored (released batches count: they were produced).</summary>
    public long Produced => Pool.Count > 0 ? Math.Max(Pool.Keys.Last(), ReleasedUpTo) : ReleasedUpTo;

    /// <summary>Checkpoints kept: the newest few, so that a corrupt one falls back to the one before (and every guard rollback's, <see cref="CheckpointWritten.Rollback"/>).</summary>
    public const int KeepCheckpoints = 3;

    public EntityState Apply(IPersistedEvent e) => e switch
    {
        EntityStarted s => this with { RunId = s.RunId, SpecYaml = s.SpecYaml, TeacherBlob = s.TeacherBlob },
        BatchStored b => this with { Pool = Pool.SetItem(b.Seq, b) },
        BatchesReleased r => this with { Pool = Pool.RemoveRange(Pool.Keys.Where(k => k <= r.UpToSeq)), ReleasedUpTo = Math.Max(ReleasedUpTo, r.UpToSeq) },
        CheckpointWritten c => this with { Checkpoints = Trim(Checkpoints.Add(c)) },
        EntityFinished => this with { Finished = true },
        EntityHold h => this with { HoldAt = h.Step },
        _ => throw new ArgumentException($"{e.GetType().Name} is not an entity event"),
    };

    /// <summary>Drops the oldest ordinary checkpoints beyond the newest few; a guard rollback's stays (and does not count among them).</summary>
    private static ImmutableList<CheckpointWritten> Trim(ImmutableList<CheckpointWritten> l)
    {
        var drop = l.Count(c => !c.Rollback) - KeepCheckpoints;
        if (drop <= 0) return l;
        return l.Where(c => c.Rollback || drop-- <= 0).ToImmutableList();
    }

    public EntitySnapshot ToSnapshot() => new(RunId, SpecYaml, TeacherBlob, Pool.Values.ToArray(),
        ReleasedUpTo, Checkpoints.ToArray(), Finished, HoldAt);

    public static EntityState FromSnapshot(EntitySnapshot s) => new(s.RunId, s.SpecYaml, s.TeacherBlob,
        s.Pool.ToImmutableSortedDictionary(b => b.Seq, b => b), s.ReleasedUpTo, s.Checkpoints.ToImmutableList(), s.Finished, s.HoldAt);
}

