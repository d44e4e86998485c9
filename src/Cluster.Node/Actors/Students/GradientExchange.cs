using System.Runtime.InteropServices;
using Cluster.Contracts.Students;
using Cluster.Node.Transport;

namespace Cluster.Node.Actors;

/// <summary>How a gradient chunk was taken.</summary>
public enum ChunkVerdict
{
    Accepted,
    /// <summary>A late duplicate of a step already applied, one from a peer about to roll back, or one from no peer of ours.</summary>
    Stale,
    /// <summary>It does not fit the model: the peer runs another model, and the run must fail.</summary>
    Misfit,
}

/// <summary>A chunk this replica sends: to peer `Peer`, from an array that is not written again.</summary>
public readonly record struct Outgoing(int Peer, GradientSlice Slice);

/// <summary>
/// The all-reduce the student replicas run (and `bench --cluster` measures). Two replicas send each
/// other their whole gradient and each reduces all of it. More run a reduce-scatter and an
/// all-gather: the flat gradient is cut into N shards, replica q owns shard q. Each replica
/// sends shard q of its gradient to replica q; the owner sums its shard's pieces in replica order in
/// float32 and divides by N, and sends that range of the mean to every peer. Every replica thus
/// sends 2(N-1)/N of a gradient a step, the ring all-reduce's volume, reduces 1/N of it, and every
/// element of the mean is computed once, by its owner, so every replica applies the same bits.
/// Chunks arrive in any order and may come twice (a peer resends after a failover). A range is
/// reduced as soon as every replica's values for it are in (the replicas chunk alike), while the
/// rest is still on the wire; ranges that do not line up are reduced once the shard is whole.
/// The owner writes its shard's mean into its own gradient's shard, which no peer needs and which is
/// never written again, and sends it from there. A chunk says which it is by its range: within the
/// receiver's shard, a peer's gradient; within its sender's shard, that range of the mean.
/// Not thread-safe: one owner, its mailbox.
/// </summary>
public sealed class GradientExchange(int replicas, int self, long size, long chunk, Func<int, string> entityOf)
{
    private readonly Dictionary<long, StepSlot> steps = [];

    public int Replicas => replicas;

    /// <summary>
    /// Two replicas exchange whole gradients and each reduces all of it: the same bytes as a
    /// reduce-scatter, in one phase instead of two (docs/benchmarks.md: 12-13 ms against 13-15 for
    /// 16 MiB on two cores).
    /// </summary>
    private readonly bool direct = replicas == 2;

    /// <summary>Shard q of the flat gradient: [From, To).</summary>
    public (long From, long To) Shard(int q) => (q * size / replicas, (q + 1) * size / replicas);

    /// <summary>What this replica reduces: its shard, or everything (two replicas).</summary>
    private (long From, long To) Mine => direct ? (0, size) : Shard(self);

    /// <summary>What peer q reduces, and so what it gets of our gradient.</summary>
    private (long From, long To) Theirs(int q) => direct ? (0, size) : Shard(q);

    /// <summary>The mean peer q sends us: its shard, or nothing (two replicas).</summary>
    private (long From, long To) MeanFrom(int q) => direct ? (0, 0) : Shard(q);

    /// <summary>This replica's own gradient for `step` (kept, and written into: its shard becomes the mean); what to send.</summary>
    public IReadOnlyList<Outgoing> Own(long step, float[] flat)
    {
        if (flat.Length != size) throw new ArgumentException($"a gradient of {flat.Length} values for a model of {size} parameters");
        var slot = Slot(step);
        if (slot.Own is not null) return [];   // a step's gradient is computed once between rollbacks
        slot.Own = flat;
        List<Outgoing> outgoing = [];
        for (var q = 0; q < replicas; q++)
            if (q != self) outgoing.AddRange(Slices(step, q, flat, Theirs(q)));
        Progress(step, slot, outgoing);
        return outgoing;
    }

    public float[]? OwnAt(long step) => steps.TryGetValue(step, out var s) ? s.Own : null;

    /// <summary>What a peer that lost this step needs again: our gradient's shard for it, and the mean of our shard as far as it is reduced.</summary>
    public IReadOnlyList<Outgoing> Resend(long step, int peer)
    {
        if (peer < 0 || peer >= replicas || peer == self || !steps.TryGetValue(step, out var slot) || slot.Own is not { } own) return [];
        return [.. Slices(step, peer, own, Theirs(peer)), .. Slices(step, peer, own, Mine).Where(o => slot.MeanSent.Contains(o.Slice.ChunkIndex))];
    }

    /// <summary>
    /// Peer `peer` restored its state at the step before `step` and computes its gradient for
    /// `step` again; on a GPU the new one may differ from the copy we hold in its last bits. Two
    /// replicas each apply the mean they reduced themselves, so the old copy, and what was reduced
    /// with it, is dropped and the new one awaited: both then apply the same bits. With three or
    /// more each element of the mean is reduced once, by its owner, so every replica applies the
    /// same bits whichever copy the owner used, and nothing is dropped.
    /// </summary>
    /// <returns>Whether anything was dropped (a copy that came before the announcement may be the new one: the caller asks for it again).</returns>
    public bool PeerRestored(long step, int peer)
    {
        if (!direct || peer == self || !steps.TryGetValue(step, out var slot) || !slot.Pieces.Remove(peer, out var got)) return false;
        foreach (var b in got.Values) ExactPool<byte>.Shared.Return(b);
        // the sum is written again, range by range, as the new copy comes in
        slot.Reduced.Clear();
        return true;
    }

    /// <summary>A peer's chunk for the replica's next step `nextStep` (or the one after, while our reduction runs), and what it lets us send.</summary>
    public (ChunkVerdict Verdict, IReadOnlyList<Outgoing> Outgoing) Accept(GradientChunk c, long nextStep)
    {
        if (c.Step < nextStep || c.Step > nextStep + 1 || c.FromReplica == self || c.FromReplica < 0 || c.FromReplica >= replicas) return (ChunkVerdict.Stale, []);
        var bytes = c.Values.Data;
        var length = bytes.Length / 4;
        if (bytes.Length % 4 != 0 || length == 0 || c.ChunkCount < 1 || c.ChunkIndex < 0 || c.ChunkIndex >= c.ChunkCount) return (ChunkVerdict.Misfit, []);
        var range = (c.Offset, c.Offset + length);
        var slot = Slot(c.Step);
        if (Within(range, Mine))
        {
            // a peer's gradient for our shard
            if (!slot.Pieces.TryGetValue(c.FromReplica, out var got)) slot.Pieces[c.FromReplica] = got = [];
            if (got.TryGetValue(c.Offset, out var held) && ReferenceEquals(held, bytes)) { }   // the same message twice: one array, kept
            else if (Covered(slot.Reduced, range) || held is not null) ExactPool<byte>.Shared.Return(bytes);   // sent twice: the same values
            else got[c.Offset] = bytes;
        }
        else if (!direct && Within(range, MeanFrom(c.FromReplica)))
        {
            // the owner's mean of that range: into the step's sum
            if (!Covered(slot.MeanIn, range))
            {
                slot.Sum ??= ExactPool<float>.Shared.Rent((int)size);
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(slot.Sum.AsSpan((int)c.Offset, length));
                slot.MeanIn.Add(range);
            }
            ExactPool<byte>.Shared.Return(bytes);
        }
        else return (ChunkVerdict.Misfit, []);
        List<Outgoing> outgoing = [];
        Progress(c.Step, slot, outgoing);
        return (ChunkVerdict.Accepted, outgoing);
    }

    /// <summary>The replicas whose part of `step` is in: their gradient for our shard and their shard's mean (this replica: its gradient).</summary>
    public IReadOnlySet<int> Complete(long step)
    {
        if (!steps.TryGetValue(step, out var slot)) return new HashSet<int>();
        var mine = Mine;
        return Enumerable.Range(0, replicas).Where(r => r == self
            ? slot.Own is not null
            : (Covered(slot.Reduced, mine) || slot.Pieces.TryGetValue(r, out var got) && Covered(Ranges(got), mine))
              && Covered(slot.MeanIn, MeanFrom(r))).ToHashSet();
    }

    /// <summary>The mean for `step` once all of it is in (then the step is forgotten); else null.</summary>
    public StepMean? TakeComplete(long step)
    {
        if (!steps.TryGetValue(step, out var slot) || slot.Own is null || !Covered(slot.Reduced, Mine)) return null;
        for (var q = 0; q < replicas; q++)
            if (q != self && !Covered(slot.MeanIn, MeanFrom(q))) return null;
        steps.Remove(step);
        ReturnPieces(slot);
        slot.Sum ??= ExactPool<float>.Shared.Rent((int)size);   // a model of no parameters
        return new StepMean(slot.Sum);
    }

    /// <summary>Forgets steps up to `step` (applied: chunks a peer sent twice).</summary>
    public void DropUpTo(long step)
    {
        foreach (var old in steps.Keys.Where(k => k <= step).ToList()) Forget(old);
    }

    public void Clear()
    {
        foreach (var old in steps.Keys.ToList()) Forget(old);
    }

    private void Forget(long step)
    {
        if (!steps.Remove(step, out var slot)) return;
        ReturnPieces(slot);
        // the sum was never handed out
        if (slot.Sum is { } sum) ExactPool<float>.Shared.Return(sum);
    }

    private static void ReturnPieces(StepSlot slot)
    {
        // a received chunk's bytes belong to that chunk alone (the data plane or the codec made them for it)
        foreach (var got in slot.Pieces.Values)
            foreach (var b in got.Values) ExactPool<byte>.Shared.Return(b);
        slot.Pieces.Clear();
    }

    /// <summary>Reduces what is in of our shard, and queues the mean's chunks that are whole for every peer.</summary>
    private void Progress(long step, StepSlot slot, List<Outgoing> outgoing)
    {
        if (slot.Own is not { } own) return;
        var (from, to) = Mine;
        if (from == to) return;
        var peers = Enumerable.Range(0, replicas).Where(r => r != self).ToArray();
        var pieces = peers.Select(p => slot.Pieces.GetValueOrDefault(p) ?? []).ToArray();
        // ranges every peer sent alike
        foreach (var (offset, bytes) in peers.Length == 0 ? [] : pieces[0].ToList())
        {
            var range = (offset, offset + bytes.Length / 4);
            if (Covered(slot.Reduced, range) || pieces.Any(ps => !ps.TryGetValue(offset, out var b) || b.Length != bytes.Length)) continue;
            Reduce(slot, own, peers, range.Item1, range.Item2);
        }
        // the rest, once every peer's pieces cover the shard
        if (!Covered(slot.Reduced, (from, to)) && pieces.All(ps => Covered(Ranges(ps), (from, to))))
        {
            long at = from;
            foreach (var (a, b) in slot.Reduced.Order().ToList())
            {
                if (a > at) Reduce(slot, own, peers, at, a);
                at = Math.Max(at, b);
            }
            if (at < to) Reduce(slot, own, peers, at, to);
        }
        if (direct) return;   // nothing to send: the peer reduces all of it too
        foreach (var o in Slices(step, -1, own, (from, to)))
        {
            if (slot.MeanSent.Contains(o.Slice.ChunkIndex) || !Covered(slot.Reduced, (o.Slice.Offset, o.Slice.Offset + o.Slice.Count))) continue;
            slot.MeanSent.Add(o.Slice.ChunkIndex);
            foreach (var p in peers) outgoing.Add(o with { Peer = p, Slice = o.Slice with { EntityId = entityOf(p) } });
        }
    }

    /// <summary>The mean of [a, b) into the step's sum (what we apply) and, with three or more replicas, into our own gradient (what we send).</summary>
    private void Reduce(StepSlot slot, float[] own, int[] peers, long a, long b)
    {
        slot.Sum ??= ExactPool<float>.Shared.Rent((int)size);
        var byReplica = new IReadOnlyCollection<GradientPiece>[replicas];
        byReplica[self] = [new GradientPiece(0, own, null)];
        foreach (var p in peers) byReplica[p] = [.. slot.Pieces[p].Where(kv => kv.Key < b && kv.Key + kv.Value.Length / 4 > a).Select(kv => new GradientPiece(kv.Key, null, kv.Value))];
        // with two replicas the peer is sent all of our gradient, maybe still on its way: not written
        StepMean.Reduce(byReplica, direct ? [slot.Sum] : [own, slot.Sum], a, b);
        slot.Reduced.Add((a, b));
    }

    /// <summary>`source`'s [from, to) as the chunks peer `peer` receives (peer -1: for every peer, named when sent).</summary>
    private IEnumerable<Outgoing> Slices(long step, int peer, float[] source, (long From, long To) range) =>
        GradientSlice.Of(peer < 0 ? "" : entityOf(peer), step, self, source, chunk, range.From, range.To).Select(s => new Outgoing(peer, s));

    /// <summary>The ranges a peer's received pieces hold (keyed by offset; 4 bytes a value).</summary>
    private static IEnumerable<(long From, long To)> Ranges(Dictionary<long, byte[]> pieces) => pieces.Select(p => (p.Key, p.Key + p.Value.Length / 4L));

    private static bool Within((long From, long To) range, (long From, long To) shard) => range.From >= shard.From && range.To <= shard.To;

    /// <summary>Whether the union of `ranges` covers `range`.</summary>
    private static bool Covered(IEnumerable<(long From, long To)> ranges, (long From, long To) range)
    {
        var at = range.From;
        foreach (var (a, b) in ranges.Where(r => r.To > range.From && r.From < range.To).Order())
        {
            if (a > at) return false;
            at = Math.Max(at, b);
            if (at >= range.To) return true;
        }
        return at >= range.To;
    }

    private StepSlot Slot(long step) => steps.TryGetValue(step, out var s) ? s : steps[step] = new StepSlot();

    /// <summary>A step's own gradient, the peers' pieces of our shard by offset, what of our shard is reduced and sent, and what of the others' means is in.</summary>
    private sealed class StepSlot
    {
        public float[]? Own;
        public readonly Dictionary<int, Dictionary<long, byte[]>> Pieces = [];
        public readonly List<(long From, long To)> Reduced = [];
        public readonly HashSet<int> MeanSent = [];
        public readonly List<(long From, long To)> MeanIn = [];
        public float[]? Sum;
    }
}
