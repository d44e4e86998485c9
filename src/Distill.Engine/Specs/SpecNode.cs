using System.Globalization;
using YamlDotNet.RepresentationModel;

namespace Distill.Engine.Specs;

/// <summary>
/// A mapping of a spec that remembers which keys were read, so that unknown ones are refused.
/// Every error it raises names the file, the full key and the line.
/// </summary>
public sealed class SpecNode
{
    private readonly YamlMappingNode map;
    private readonly HashSet<string> consumed = [];
    /// <summary>Where a spec read as a whole gathers its problems (shared by its sections); null: the first one is thrown.</summary>
    private readonly List<SpecException>? problems;

    /// <param name="problems">Gather every key's problem here instead of stopping at the first (<see cref="Refuse"/>).</param>
    public SpecNode(string file, string prefix, YamlMappingNode map, List<SpecException>? problems = null)
    {
        File = file;
        Prefix = prefix;
        this.map = map;
        this.problems = problems;
    }

    /// <summary>Whether problems are gathered (else <see cref="Refuse"/> throws).</summary>
    public bool Gathers => problems is not null;

    /// <summary>A problem: gathered with the spec's others where the spec is read as a whole, else thrown.</summary>
    public void Refuse(SpecException e)
    {
        if (problems is null) throw e;
        problems.Add(e);
    }

    /// <summary>Problems gathered so far.</summary>
    public int Problems => problems?.Count ?? 0;

    /// <summary>An absent section: every key takes its default.</summary>
    public static SpecNode Empty(string file, string prefix) => new(file, prefix, new YamlMappingNode());

    public string File { get; }
    public string Prefix { get; }
    public int Line => (int)map.Start.Line;

    public bool Has(string key) => map.Children.ContainsKey(new YamlScalarNode(key));
    public bool Consumed(string key) => consumed.Contains(key);
    public void Consume(string key) => consumed.Add(key);

    public string Full(string key) => Prefix.Length == 0 ? key : $"{Prefix}.{key}";

    public SpecException Error(string key, string reason) =>
        new(File, Full(key), reason, Get(key, mark: false) is { } v ? (int)v.Start.Line : Line);

    /// <summary>An error at a dotted path below this node (teacher.arch), on the line of the deepest key present.</summary>
    public SpecException ErrorAt(string path, string reason)
    {
        YamlNode node = map;
        var line = Line;
        foreach (var part in path.Split('.'))
        {
            if (node is not YamlMappingNode m || !m.Children.TryGetValue(new YamlScalarNode(part), out var next)) break;
            node = next;
            line = (int)next.Start.Line;
        }
        return new SpecException(File, Full(path), reason, line);
    }

    private YamlNode? Get(string key, bool mark = true)
    {
        if (mark) consumed.Add(key);
        return map.Children.TryGetValue(new YamlScalarNode(key), out var v) ? v : null;
    }

    private string? Scalar(string key, bool required)
    {
        var v = Get(key);
        if (v is null)
        {
            if (required) throw new SpecException(File, Full(key), "required key is missing", Line);
            return null;
        }
        if (v is not YamlScalarNode s) throw new SpecException(File, Full(key), "expected a single value, found a list or mapping", (int)v.Start.Line);
        if (s.Style == YamlDotNet.Core.ScalarStyle.Plain && s.Value is "~" or "null" or "") return null;
        return s.Value;
    }

    public string? String(string key, string? dflt, bool required)
    {
        var v = Scalar(key, required);
        return v ?? dflt;
    }

    public string? Choice(string key, IReadOnlyList<string> allowed, string? dflt, bool required)
    {
        var v = Scalar(key, required);
        if (v is null) return dflt;
        if (!allowed.Contains(v)) throw Error(key, $"'{v}' is not one of: {string.Join(", ", allowed)}");
        return v;
    }

    public int Int(string key, int dflt, int min, int max)
    {
        var v = Scalar(key, false);
        if (v is null) return dflt;
        if (!int.TryParse(v.Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out var i))
            throw Error(key, $"expected an integer, got '{v}'");
        if (i < min || i > max) throw Error(key, $"{i} is out of range [{min}, {max}]");
        return i;
    }

    public double Double(string key, double dflt, double min, double max, bool exclusiveMin, bool exclusiveMax)
    {
        var v = Scalar(key, false);
        if (v is null) return dflt;
        if (!double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) || !double.IsFinite(d))
            throw Error(key, $"expected a finite number, got '{v}'");
        if (d < min || d > max || exclusiveMin && d == min || exclusiveMax && d == max)
            throw Error(key, $"{d.ToString(CultureInfo.InvariantCulture)} is out of range {SpecRange.Text(min, max, exclusiveMin, exclusiveMax)}");
        return d;
    }

    public bool Bool(string key, bool dflt)
    {
        var v = Scalar(key, false);
        return v switch
        {
            null => dflt,
            "true" or "yes" or "on" => true,
            "false" or "no" or "off" => false,
            _ => throw Error(key, $"expected true or false, got '{v}'"),
        };
    }

    /// <summary>A node pool name (what `Cluster.GpuNode join --pool` names).</summary>
    public string? Pool(string key, string? dflt)
    {
        var v = Scalar(key, false);
        if (v is not null && !LayoutSpec.IsValidPool(v)) throw Error(key, $"'{v}' is not a pool name (letters, digits, '-', '_', '.')");
        return v ?? dflt;
    }

    public string[] PoolList(string key, string[] dflt)
    {
        var v = Get(key);
        if (v is null) return dflt;
        if (v is YamlScalarNode) return Pool(key, null) is { } one ? [one] : [];
        if (v is not YamlSequenceNode seq) throw Error(key, "expected a pool name or a list of them, one per replica");
        return seq.Children.Select(c => c is YamlScalarNode s && LayoutSpec.IsValidPool(s.Value ?? "")
            ? s.Value! : throw Error(key, $"'{c}' is not a pool name (letters, digits, '-', '_', '.')")).ToArray();
    }

    public int[] IntList(string key, int[] dflt)
    {
        var v = Get(key);
        if (v is null) return dflt;
        if (v is not YamlSequenceNode seq) throw Error(key, "expected a list of integers, e.g. [1000, 2000]");
        return seq.Children.Select(c => c is YamlScalarNode s && int.TryParse(s.Value, out var i) && i >= 0
            ? i : throw Error(key, $"'{c}' is not a non-negative integer")).ToArray();
    }

    /// <summary>A mapping of text to text (an empty value is the empty string), in the spec's order.</summary>
    public KeyValuePair<string, string>[] StringMap(string key, KeyValuePair<string, string>[] dflt)
    {
        var v = Get(key);
        if (v is null) return dflt;
        if (v is not YamlMappingNode m) throw Error(key, "expected a mapping of text to text, e.g. {\"backbone.\": \"\"}");
        return m.Children.Select(c => c.Key is YamlScalarNode k && c.Value is YamlScalarNode s && !string.IsNullOrEmpty(k.Value)
            ? new KeyValuePair<string, string>(k.Value, s.Value ?? "") : throw Error(key, $"'{c.Key}: {c.Value}' is not a pair of texts")).ToArray();
    }

    public SpecNode? Section(string key, bool required)
    {
        var v = Get(key);
        if (v is null || v is YamlScalarNode { Value: "~" or "null" or "" })
        {
            if (required) throw new SpecException(File, Full(key), "required section is missing", Line);
            return null;
        }
        if (v is not YamlMappingNode m) throw new SpecException(File, Full(key), "expected a section (a mapping of keys)", (int)v.Start.Line);
        return new SpecNode(File, Full(key), m, problems);
    }

    public void EnsureAllConsumed()
    {
        foreach (var (k, _) in map.Children)
        {
            var key = (k as YamlScalarNode)?.Value ?? k.ToString();
            if (!consumed.Contains(key))
                Refuse(new SpecException(File, Full(key), "unknown key", (int)k.Start.Line));
        }
    }

    /// <summary>Keys present that were not read (a section of another method, for instance).</summary>
    public IEnumerable<string> Unread() =>
        map.Children.Keys.Select(k => (k as YamlScalarNode)?.Value ?? k.ToString()).Where(k => !consumed.Contains(k));
}

public static class SpecRange
{
    public static string Text(double min, double max, bool exclusiveMin, bool exclusiveMax) =>
        $"{(exclusiveMin ? "(" : "[")}{Number(min)}, {Number(max)}{(exclusiveMax ? ")" : "]")}";

    public static string Number(double d) => d switch
    {
        double.PositiveInfinity => "inf",
        double.NegativeInfinity => "-inf",
        int.MaxValue => "2^31-1",
        _ => d.ToString(CultureInfo.InvariantCulture),
    };
}
