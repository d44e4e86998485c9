using System.Collections.Concurrent;
using System.Globalization;
using System.Reflection;
using System.Text;
using YamlDotNet.RepresentationModel;

namespace Distill.Engine.Specs;

/// <summary>
/// Declares a key of a spec section on the property of the section's record that holds it. The
/// record is the declaration: the property's initialiser is the default, this attribute its range
/// and description, so that the parser, the resolved spec, `methods` and the docs read one place.
/// The key is the property name in snake_case unless <see cref="Name"/> says otherwise. A property
/// whose type is itself a record of keys is a subsection.
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class SpecKeyAttribute(string doc) : Attribute
{
    public string Doc { get; } = doc;
    public string? Name { get; init; }
    public double Min { get; init; } = double.NegativeInfinity;
    public double Max { get; init; } = double.PositiveInfinity;
    public bool MinExclusive { get; init; }
    public bool MaxExclusive { get; init; }
    /// <summary>The values a string key takes.</summary>
    public string[]? Choices { get; init; }
    /// <summary>A type whose public static IReadOnlyList&lt;string&gt; property or field <see cref="ChoicesMember"/> lists the values.</summary>
    public Type? ChoicesFrom { get; init; }
    public string? ChoicesMember { get; init; }
    /// <summary>The key has no default and must be given.</summary>
    public bool Required { get; init; }
    /// <summary>A node pool name (string), or a list of them (string[]).</summary>
    public bool Pool { get; init; }
}

/// <summary>A section record's own consistency rules, beyond each key's range (epochs or steps, not both).</summary>
public interface ISpecChecked
{
    /// <summary>What is wrong, as (key below the section, reason); empty when nothing is.</summary>
    IEnumerable<(string Key, string Reason)> Problems();
}

/// <summary>One key as the docs and `methods` list it.</summary>
public sealed record SpecKeyInfo(string Path, string Type, string Default, string Doc);

/// <summary>Reads, writes and describes records of <see cref="SpecKeyAttribute"/> keys.</summary>
public static class SpecSection
{
    private sealed record KeyDef(PropertyInfo Property, SpecKeyAttribute Attr, string Name, IReadOnlyList<string>? Choices, bool IsSection);

    private static readonly ConcurrentDictionary<Type, KeyDef[]> Keys = new();

    private static KeyDef[] KeysOf(Type t) => Keys.GetOrAdd(t, type => type
        .GetProperties(BindingFlags.Public | BindingFlags.Instance)
        .Select(p => (p, a: p.GetCustomAttribute<SpecKeyAttribute>()))
        .Where(x => x.a is not null)
        .Select(x => new KeyDef(x.p, x.a!, x.a!.Name ?? SnakeCase(x.p.Name), ChoicesOf(x.a!), IsSectionType(x.p.PropertyType)))
        .ToArray());

    /// <summary>Whether a type is a record of spec keys (a subsection).</summary>
    public static bool IsSectionType(Type t) => t.IsClass && t != typeof(string) && !t.IsArray &&
        t.GetProperties().Any(p => p.IsDefined(typeof(SpecKeyAttribute)));

    private static IReadOnlyList<string>? ChoicesOf(SpecKeyAttribute a)
    {
        if (a.Choices is not null) return a.Choices;
        if (a.ChoicesFrom is null) return null;
        var member = a.ChoicesFrom.GetMember(a.ChoicesMember ?? "", BindingFlags.Public | BindingFlags.Static).FirstOrDefault();
        return member switch
        {
            PropertyInfo p => (IReadOnlyList<string>)p.GetValue(null)!,
            FieldInfo f => (IReadOnlyList<string>)f.GetValue(null)!,
            _ => throw new InvalidOperationException($"{a.ChoicesFrom.Name}.{a.ChoicesMember}: no such static list of choices"),
        };
    }

    public static string SnakeCase(string name)
    {
        var sb = new StringBuilder();
        for (var i = 0; i < name.Length; i++)
        {
            var c = name[i];
            if (char.IsUpper(c) && i > 0 && (char.IsLower(name[i - 1]) || char.IsDigit(name[i - 1]))) sb.Append('_');
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }

    /// <summary>The spec key of a record's property (for errors about it).</summary>
    public static string KeyName<T>(string property) =>
        KeysOf(typeof(T)).FirstOrDefault(k => k.Property.Name == property)?.Name ?? throw new ArgumentException($"{typeof(T).Name}.{property} is not a spec key");

    /// <summary>
    /// Reads the section's keys from node (null: the section is absent, every key its default)
    /// into a copy of defaults, checks it and refuses keys it does not know.
    /// </summary>
    public static T Parse<T>(SpecNode? node, T defaults, string file, string path) where T : class
    {
        var n = node ?? SpecNode.Empty(file, path);
        var value = Read(n, defaults);
        n.EnsureAllConsumed();
        return value;
    }

    /// <summary>Reads the keys of T from node into a copy of defaults, leaving other keys of node unread.</summary>
    public static T Read<T>(SpecNode node, T defaults) where T : class => (T)Read(node, defaults.GetType(), defaults);

    private static object Read(SpecNode node, Type type, object defaults)
    {
        var value = Clone(defaults);
        var before = node.Problems;
        foreach (var k in KeysOf(type))
        {
            // a key refused keeps its default, so that the spec's other problems are found too
            try { k.Property.SetValue(value, ReadKey(node, k, k.Property.GetValue(defaults))); }
            catch (SpecException e) when (node.Gathers) { node.Refuse(e); }
        }
        // the keys' checks together, where each key was taken (a default in a refused one's place could be what they find)
        if (node.Problems == before && value is ISpecChecked checkedValue && checkedValue.Problems().FirstOrDefault() is { Key: not null } problem)
            node.Refuse(node.ErrorAt(problem.Key, problem.Reason));
        return value;
    }

    private static object? ReadKey(SpecNode node, KeyDef k, object? dflt)
    {
        var a = k.Attr;
        var t = k.Property.PropertyType;
        if (k.IsSection)
        {
            var sub = node.Section(k.Name, a.Required);
            if (sub is null) return dflt is null ? null : Read(SpecNode.Empty(node.File, node.Full(k.Name)), t, dflt);
            var v = Read(sub, t, dflt ?? Activator.CreateInstance(t)!);
            sub.EnsureAllConsumed();
            return v;
        }
        if (t == typeof(int))
            return node.Int(k.Name, (int)dflt!, a.Min == double.NegativeInfinity ? int.MinValue : (int)a.Min, a.Max == double.PositiveInfinity ? int.MaxValue : (int)a.Max);
        if (t == typeof(double)) return node.Double(k.Name, (double)dflt!, a.Min, a.Max, a.MinExclusive, a.MaxExclusive);
        if (t == typeof(bool)) return node.Bool(k.Name, (bool)dflt!);
        if (t == typeof(int[])) return node.IntList(k.Name, (int[])dflt!);
        if (t == typeof(KeyValuePair<string, string>[])) return node.StringMap(k.Name, (KeyValuePair<string, string>[])dflt!);
        if (t == typeof(string[]) && a.Pool) return node.PoolList(k.Name, (string[])dflt!);
        if (t == typeof(string))
        {
            if (a.Pool) return node.Pool(k.Name, (string?)dflt);
            if (k.Choices is not null) return node.Choice(k.Name, k.Choices, (string?)dflt, a.Required);
            return node.String(k.Name, (string?)dflt, a.Required);
        }
        throw new InvalidOperationException($"spec key {node.Full(k.Name)}: type {t.Name} is not supported");
    }

    private static object Clone(object o)
    {
        var clone = o.GetType().GetMethod("<Clone>$") ?? throw new InvalidOperationException($"{o.GetType().Name} is not a record");
        return clone.Invoke(o, null)!;
    }

    /// <summary>The section as YAML, every key with its value (absent optional values left out): it parses back to the same record.</summary>
    public static YamlMappingNode Write(object value)
    {
        var m = new YamlMappingNode();
        foreach (var k in KeysOf(value.GetType()))
        {
            var v = k.Property.GetValue(value);
            if (v is null or KeyValuePair<string, string>[] { Length: 0 }) continue;
            m.Add(k.Name, k.IsSection ? Write(v) : Scalar(v));
        }
        return m;
    }

    private static YamlNode Scalar(object v) => v switch
    {
        int[] ints => new YamlSequenceNode(ints.Select(i => new YamlScalarNode(i.ToString(CultureInfo.InvariantCulture)))) { Style = YamlDotNet.Core.Events.SequenceStyle.Flow },
        string[] strings => new YamlSequenceNode(strings.Select(s => new YamlScalarNode(s))) { Style = YamlDotNet.Core.Events.SequenceStyle.Flow },
        KeyValuePair<string, string>[] map => new YamlMappingNode(map.Select(kv => new KeyValuePair<YamlNode, YamlNode>(
            new YamlScalarNode(kv.Key) { Style = YamlDotNet.Core.ScalarStyle.DoubleQuoted },
            new YamlScalarNode(kv.Value) { Style = YamlDotNet.Core.ScalarStyle.DoubleQuoted }))) { Style = YamlDotNet.Core.Events.MappingStyle.Flow },
        _ => new YamlScalarNode(Text(v)),
    };

    private static string Text(object? v) => v switch
    {
        null => "",
        bool b => b ? "true" : "false",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        int i => i.ToString(CultureInfo.InvariantCulture),
        int[] ints => $"[{string.Join(", ", ints)}]",
        string[] strings => $"[{string.Join(", ", strings)}]",
        KeyValuePair<string, string>[] map => $"{{{string.Join(", ", map.Select(kv => $"\"{kv.Key}\": \"{kv.Value}\""))}}}",
        _ => v.ToString() ?? "",
    };

    /// <summary>Every key of the section (subsections flattened to dotted paths), with its type, default and description.</summary>
    public static IEnumerable<SpecKeyInfo> Describe(object defaults, string prefix)
    {
        foreach (var k in KeysOf(defaults.GetType()))
        {
            var path = prefix.Length == 0 ? k.Name : $"{prefix}.{k.Name}";
            var v = k.Property.GetValue(defaults);
            if (k.IsSection)
            {
                foreach (var sub in Describe(v ?? Activator.CreateInstance(k.Property.PropertyType)!, path)) yield return sub;
                continue;
            }
            yield return new SpecKeyInfo(path, TypeText(k), k.Attr.Required ? "(required)" : v is null ? "(none)" : Text(v), k.Attr.Doc);
        }
    }

    private static string TypeText(KeyDef k)
    {
        var a = k.Attr;
        var t = k.Property.PropertyType;
        if (k.Choices is not null) return string.Join(" | ", k.Choices);
        if (a.Pool) return t.IsArray ? "pool name, or a list of them" : "pool name";
        if (t == typeof(bool)) return "true | false";
        if (t == typeof(int[])) return "list of integers";
        if (t == typeof(KeyValuePair<string, string>[])) return "mapping of text to text";
        if (t == typeof(string)) return "text";
        var kind = t == typeof(int) ? "integer" : "number";
        if (a.Min == double.NegativeInfinity && a.Max == double.PositiveInfinity) return kind;
        if (a.Max == double.PositiveInfinity) return $"{kind} {(a.MinExclusive ? ">" : ">=")} {SpecRange.Number(a.Min)}";
        return $"{kind} in {SpecRange.Text(a.Min, a.Max, a.MinExclusive, a.MaxExclusive)}";
    }
}
