namespace Distill.Engine.Sweeps;

/// <summary>A finished configuration's result, as a score where higher is better (<see cref="SweepSpec.Score"/>).</summary>
public sealed record Observation(TrialConfig Config, double Score);

/// <summary>
/// Chooses configurations. A searcher is a pure function of the sweep, the configuration's number
/// and the results observed before it was asked: its state is the list of suggestions and
/// observations the sweep coordinator journals, so that a sweep resumed after a crash makes the
/// same choices (Ray Tune's restore falls back to a basic generator, ray-project/ray#30861).
/// </summary>
public abstract class Searcher(SweepSpec sweep)
{
    protected SweepSpec Sweep { get; } = sweep;

    /// <summary>How many configurations the search makes (null: as many as asked).</summary>
    public abstract long? Total { get; }

    /// <summary>Configuration number <paramref name="index"/> (0-based), or null when the search has made all of its own.</summary>
    public abstract TrialConfig? Suggest(long index, IReadOnlyList<Observation> observed);

    public static Searcher For(SweepSpec sweep) => sweep.Search.Kind switch
    {
        "grid" => new GridSearcher(sweep),
        "random" => new RandomSearcher(sweep),
        "tpe" => new TpeSearcher(sweep),
        _ => throw new ArgumentException($"unknown search '{sweep.Search.Kind}'"),
    };

    /// <summary>The random stream of one configuration: a function of the sweep's seed and the number alone.</summary>
    protected Random Rng(long index, int salt = 0) => new(unchecked((int)(((long)Sweep.Seed * 1_000_003L + index) * 31 + salt) & 0x7fffffff));

    protected TrialConfig Draw(long index) => Draw(Rng(index));

    protected TrialConfig Draw(Random rng) => new(Sweep.Space.Select(d => new KeyValuePair<string, string>(d.Path, d.Sample(rng))).ToArray());
}

/// <summary>Every combination of the grid dimensions, the last varying fastest, repeated `samples` times; other dimensions drawn for each.</summary>
public sealed class GridSearcher(SweepSpec sweep) : Searcher(sweep)
{
    private readonly GridDimension[] grid = sweep.Space.OfType<GridDimension>().ToArray();
    private long[]? order;

    private long Combinations => grid.Aggregate(1L, (n, d) => n * d.Options.Count);

    /// <summary>The combination the index visits: the listed order, or (shuffle) a permutation drawn once from the sweep's seed.</summary>
    private long Combination(long index)
    {
        var k = index % Combinations;
        if (!Sweep.Search.Shuffle) return k;
        if (order is null)
        {
            var rng = new Random(Sweep.Seed);
            order = new long[Combinations];
            for (long i = 0; i < order.Length; i++) order[i] = i;
            for (var i = order.Length - 1; i > 0; i--)
            {
                var j = rng.Next(i + 1);
                (order[i], order[j]) = (order[j], order[i]);
            }
        }
        return order[k];
    }

    public override long? Total => Combinations * Sweep.Search.Samples;

    public override TrialConfig? Suggest(long index, IReadOnlyList<Observation> observed)
    {
        if (index >= Total) return null;
        var rest = Combination(index);
        var picked = new Dictionary<string, string>();
        for (var i = grid.Length - 1; i >= 0; i--)
        {
            picked[grid[i].Path] = grid[i].Options[(int)(rest % grid[i].Options.Count)];
            rest /= grid[i].Options.Count;
        }
        var rng = Rng(index);
        return new TrialConfig(Sweep.Space.Select(d => new KeyValuePair<string, string>(d.Path, d is GridDimension ? picked[d.Path] : d.Sample(rng))).ToArray());
    }
}

/// <summary>`samples` independent draws; a grid dimension is drawn from like a choice.</summary>
public sealed class RandomSearcher(SweepSpec sweep) : Searcher(sweep)
{
    public override long? Total => Sweep.Search.Samples;

    public override TrialConfig? Suggest(long index, IReadOnlyList<Observation> observed) => index >= Total ? null : Draw(index);
}
