using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>
/// DeepInversion's growing pool of synthesised images with the teacher's probabilities on them,
/// held on the CPU and sampled by the student. Step s's batch is drawn from a generator seeded by
/// (seed, s) alone, so replicas of a student draw the same batch without sharing random state, and
/// a student restored at any step draws what it would have drawn.
/// </summary>
public sealed class SyntheticPool : IDisposable
{
    private Tensor? images, probs;
    /// <summary>Images in rounds 1..k, by k - 1.</summary>
    private readonly List<long> ends = [];

    public int Rounds { get; private set; }
    public long Count => images is null ? 0 : images.shape[0];
    public Tensor? Images => images;

    /// <summary>Appends round Rounds + 1 (copied to the CPU).</summary>
    public void Add(int round, Tensor roundImages, Tensor roundProbs)
    {
        if (round != Rounds + 1) throw new ArgumentException($"round {round} added to a pool holding rounds 1..{Rounds}");
        if (roundImages.shape[0] != roundProbs.shape[0])
            throw new ArgumentException($"round {round}: {roundImages.shape[0]} images with {roundProbs.shape[0]} label rows");
        if (images is not null && (!images.shape.Skip(1).SequenceEqual(roundImages.shape.Skip(1)) || probs!.shape[1] != roundProbs.shape[1]))
            throw new ArgumentException($"round {round}: images [{string.Join(", ", roundImages.shape)}] do not fit the pool's [{string.Join(", ", images.shape)}]");
        using var scope = NewDisposeScope();
        var x = roundImages.detach().to(float32).cpu();
        var p = roundProbs.detach().to(float32).cpu();
        var grownX = images is null ? x.clone() : cat([images, x], 0);
        var grownP = probs is null ? p.clone() : cat([probs, p], 0);
        images?.Dispose();
        probs?.Dispose();
        images = grownX.DetachFromDisposeScope();
        probs = grownP.DetachFromDisposeScope();
        ends.Add(images.shape[0]);
        Rounds = round;
    }

    public static ulong StepSeed(long seed, long step) => unchecked((ulong)seed * 0xD1B54A32D192ED03UL + (ulong)step * 0x94D049BB133111EBUL + 7);

    /// <summary>
    /// Student step `step`'s batch from the first `rounds` rounds (indices drawn with replacement), on
    /// the device; the caller owns both tensors. A pipeline student may hold later rounds already.
    /// </summary>
    public (Tensor Images, Tensor Probs) Sample(long seed, long step, int batch, Device device, int rounds)
    {
        if (rounds < 1 || rounds > Rounds) throw new InvalidOperationException($"student step {step} needs rounds 1..{rounds}; the pool holds 1..{Rounds}");
        using var scope = NewDisposeScope();
        using var g = new Generator(StepSeed(seed, step));
        var idx = randint(0, ends[rounds - 1], [batch], generator: g);
        var x = images!.index_select(0, idx).to(device);
        var p = probs!.index_select(0, idx).to(device);
        return (x.DetachFromDisposeScope(), p.DetachFromDisposeScope());
    }

    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "synthetic-pool");
        w.Write(Rounds);
        if (Rounds == 0) return;
        StateIo.WriteTensor(w, images!);
        StateIo.WriteTensor(w, probs!);
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, "synthetic-pool");
        var rounds = r.ReadInt32();
        Tensor? x = null, p = null;
        if (rounds > 0)
        {
            x = StateIo.ReadTensor(r);
            p = StateIo.ReadTensor(r);
        }
        if (rounds > 0 && x!.shape[0] % rounds != 0) throw new InvalidDataException($"a pool of {x.shape[0]} images does not split into {rounds} equal rounds");
        images?.Dispose();
        probs?.Dispose();
        (images, probs, Rounds) = (x?.DetachFromDisposeScope(), p?.DetachFromDisposeScope(), rounds);
        ends.Clear();
        for (var k = 1; k <= rounds; k++) ends.Add(x!.shape[0] / rounds * k);
    }

    public void Dispose()
    {
        images?.Dispose();
        probs?.Dispose();
    }
}
