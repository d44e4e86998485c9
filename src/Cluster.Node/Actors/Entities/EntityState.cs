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
    long? HoldAt = null,
    ImmutableSortedDictionary<long, ReportQueued>? Reports = null,
    long LastReport = 0)
{
    public static readonly EntityState Empty = new(null, null, null, ImmutableSortedDictionary<long, BatchStored>.Empty, 0, [], false);

    /// <summary>Metrics rows and sample grids not yet acknowledged by the coordinator, by their Seq.</summary>
    public ImmutableSortedDictionary<long, ReportQueued> Outbox => Reports ?? ImmutableSortedDictionary<long, ReportQueued>.Empty;

    /// <summary>
    /// The most metrics rows and sample grids an entity holds for a coordinator that does not answer
    /// (about 3 MB of rows; the grids are PNGs of tens of KB): beyond them the oldest of the kind are
    /// given up, and the coordinator is told so by each report's <see cref="ReportHeader.Previous"/>.
    /// </summary>
    public const int MaxHeldRows = 10_000, MaxHeldGrids = 32;

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
        ReportQueued q => Queue(q),
        _ => throw new ArgumentException($"{e.GetType().Name} is not an entity event"),
    };

    /// <summary>Drops the oldest ordinary checkpoints beyond the newest few; a guard rollback's stays (and does not count among them).</summary>
    private static ImmutableList<CheckpointWritten> Trim(ImmutableList<CheckpointWritten> l)
    {
        var drop = l.Count(c => !c.Rollback) - KeepCheckpoints;
        if (drop <= 0) return l;
        return l.Where(c => c.Rollback || drop-- <= 0).ToImmutableList();
    }

    private EntityState Queue(ReportQueued q)
    {
        var seq = q.Header.Seq;
        var held = Outbox.SetItem(seq, q);
        held = GiveUpOldest(held, r => r.Metrics is not null, MaxHeldRows);
        held = GiveUpOldest(held, r => r.Samples is not null, MaxHeldGrids);
        return this with { Reports = held, LastReport = Math.Max(LastReport, seq) };
    }

    private static ImmutableSortedDictionary<long, ReportQueued> GiveUpOldest(ImmutableSortedDictionary<long, ReportQueued> held, Func<ReportQueued, bool> kind, int max)
    {
        var over = held.Values.Count(kind) - max;
        return over <= 0 ? held : held.RemoveRange(held.Where(r => kind(r.Value)).Take(over).Select(r => r.Key));
    }

    /// <summary>
    /// The coordinator has every report up to `upTo`. Applied, not journaled: after a restart the
    /// entity sends those again, and the coordinator skips them as known.
    /// </summary>
    public EntityState Acknowledge(long upTo) =>
        Outbox.Count == 0 || Outbox.Keys.First() > upTo ? this : this with { Reports = Outbox.RemoveRange(Outbox.Keys.TakeWhile(k => k <= upTo)) };

    /// <summary>The entity's nearest report before `seq` that it still holds (0: none): <see cref="ReportHeader.Previous"/>.</summary>
    public long HeldBefore(long seq)
    {
        long previous = 0;
        foreach (var k in Outbox.Keys)
        {
            if (k >= seq) break;
            previous = k;
        }
        return previous;
    }

    public EntitySnapshot ToSnapshot() => new(RunId, SpecYaml, TeacherBlob, Pool.Values.ToArray(),
        ReleasedUpTo, Checkpoints.ToArray(), Finished, HoldAt, Outbox.Count > 0 ? Outbox.Values.ToArray() : null, LastReport);

    public static EntityState FromSnapshot(EntitySnapshot s) => new(s.RunId, s.SpecYaml, s.TeacherBlob,
        s.Pool.ToImmutableSortedDictionary(b => b.Seq, b => b), s.ReleasedUpTo, s.Checkpoints.ToImmutableList(), s.Finished, s.HoldAt,
        s.Reports?.ToImmutableSortedDictionary(r => r.Header.Seq, r => r), s.LastReport);
}

