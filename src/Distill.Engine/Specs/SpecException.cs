namespace Distill.Engine.Specs;

/// <summary>A run spec was refused: names the file, the key and the reason.</summary>
public sealed class SpecException : Exception
{
    public SpecException(string file, string key, string reason, int line = 0)
        : base($"{file}{(line > 0 ? $":{line}" : "")}: {(key.Length > 0 ? $"'{key}': " : "")}{reason}")
    {
        (File, Key, Reason, Line) = (file, key, reason, line);
        All = [this];
    }

    private SpecException(SpecException first, IReadOnlyList<SpecException> all)
        : base(first.Message + string.Concat(all.Skip(1).Select(e => "\n  " + e.Message)))
    {
        (File, Key, Reason, Line, All) = (first.File, first.Key, first.Reason, first.Line, all);
    }

    /// <summary>Several problems of one spec as one refusal: each on its line, in the file's order (the first names File, Key and Reason).</summary>
    public static SpecException Of(IReadOnlyList<SpecException> problems)
    {
        var ordered = problems.OrderBy(p => p.Line).ToList();
        return ordered.Count == 1 ? ordered[0] : new SpecException(ordered[0], ordered);
    }

    public string File { get; }
    public string Key { get; }
    public string Reason { get; }
    public int Line { get; }
    /// <summary>Every problem refused together (this one alone, for a single problem).</summary>
    public IReadOnlyList<SpecException> All { get; }
}
