using System.Globalization;

namespace Distill.Engine.Sweeps;

/// <summary>
/// One swept key of the run spec, by its dotted path (`student.train.lr`, `kd.temperature`,
/// `seed`), and the values it takes. Values are YAML scalars as text, so that a trial's spec is
/// the base spec with those texts at those paths, read by the one spec parser.
/// </summary>
public abstract record Dimension(string Path)
{
    /// <summary>The kind as the sweep spec names it.</summary>
    public abstract string Kind { get; }

    /// <summary>A value drawn at random (a grid dimension draws among its values, as a choice does).</summary>
    public abstract string Sample(Random rng);

    /// <summary>Values that stand for the whole range when the path is checked against the method's schema.</summary>
    public abstract IEnumerable<string> Representatives();

    /// <summary>Finite values (choice, grid, int): their list; null for a continuous range.</summary>
    public virtual IReadOnlyList<string>? Values => null;

    public static string Number(double d) => d.ToString("R", CultureInfo.InvariantCulture);
}

/// <summary>A categorical or numeric list sampled uniformly.</summary>
public sealed record ChoiceDimension(string Path, IReadOnlyList<string> Options) : Dimension(Path)
{
    public override string Kind => "choice";
    public override string Sample(Random rng) => Options[rng.Next(Options.Count)];
    public override IEnumerable<string> Representatives() => Options;
    public override IReadOnlyList<string> Values => Options;
}

/// <summary>A list crossed with every other grid dimension by the grid search (Ray Tune's grid_search).</summary>
public sealed record GridDimension(string Path, IReadOnlyList<string> Options) : Dimension(Path)
{
    public override string Kind => "grid";
    public override string Sample(Random rng) => Options[rng.Next(Options.Count)];
    public override IEnumerable<string> Representatives() => Options;
    public override IReadOnlyList<string> Values => Options;
}

/// <summary>A real number in [Low, High), uniform, or uniform in its logarithm.</summary>
public sealed record RangeDimension(string Path, double Low, double High, bool Log) : Dimension(Path)
{
    public override string Kind => Log ? "loguniform" : "uniform";

    /// <summary>The value's coordinate in the space the distribution is uniform in.</summary>
    public double ToInternal(double v) => Log ? Math.Log(v) : v;
    public double FromInternal(double x) => Math.Clamp(Log ? Math.Exp(x) : x, Low, High);
    public double InternalLow => ToInternal(Low);
    public double InternalHigh => ToInternal(High);

    public override string Sample(Random rng) => Number(FromInternal(InternalLow + rng.NextDouble() * (InternalHigh - InternalLow)));
    public override IEnumerable<string> Representatives() => [Number(Low), Number(High), Number(FromInternal((InternalLow + InternalHigh) / 2))];
}

/// <summary>Integers Low, Low+Step, ..., up to High inclusive.</summary>
public sealed record IntDimension(string Path, long Low, long High, long Step) : Dimension(Path)
{
    public override string Kind => "int";
    public long Count => (High - Low) / Step + 1;
    public override string Sample(Random rng) => (Low + rng.NextInt64(Count) * Step).ToString(CultureInfo.InvariantCulture);
    public override IEnumerable<string> Representatives() => [Low.ToString(CultureInfo.InvariantCulture), (Low + (Count - 1) * Step).ToString(CultureInfo.InvariantCulture)];
    public override IReadOnlyList<string>? Values => Count <= 10_000
        ? Enumerable.Range(0, (int)Count).Select(i => (Low + i * Step).ToString(CultureInfo.InvariantCulture)).ToArray()
        : null;
}

/// <summary>A trial's hyperparameters: path → YAML scalar text, in the space's order.</summary>
public sealed record TrialConfig(IReadOnlyList<KeyValuePair<string, string>> Values)
{
    public string this[string path] => Values.First(v => v.Key == path).Value;

    public override string ToString() => string.Join(", ", Values.Select(v => $"{v.Key}={v.Value}"));

    // equal by their values, in order (a record would compare the lists by reference)
    public bool Equals(TrialConfig? other) => other is not null && Values.SequenceEqual(other.Values);

    public override int GetHashCode() => Values.Aggregate(0, (h, v) => HashCode.Combine(h, v.Key, v.Value));
}
