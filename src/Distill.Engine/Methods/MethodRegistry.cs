using System.Reflection;

namespace Distill.Engine.Methods;

/// <summary>
/// Every method, by spec name: each sealed <see cref="MethodDefinition"/> of the engine (found by
/// reflection, the way torchdistill's decorators register), plus any a host registers.
/// </summary>
public static class MethodRegistry
{
    private static readonly object Gate = new();
    private static readonly SortedDictionary<string, MethodDefinition> ByName = new(StringComparer.Ordinal);

    static MethodRegistry()
    {
        foreach (var t in typeof(MethodRegistry).Assembly.GetTypes()
                     .Where(t => t is { IsClass: true, IsAbstract: false } && t.IsSubclassOf(typeof(MethodDefinition)) && t.GetConstructor(Type.EmptyTypes) is not null))
            Register((MethodDefinition)Activator.CreateInstance(t)!);
    }

    /// <summary>Adds a method (one defined outside the engine); its name must be new.</summary>
    public static void Register(MethodDefinition method)
    {
        lock (Gate)
        {
            if (!ByName.TryAdd(method.Name, method))
                throw new InvalidOperationException($"method '{method.Name}' is registered twice ({ByName[method.Name].GetType().Name}, {method.GetType().Name})");
        }
    }

    public static IReadOnlyList<MethodDefinition> All
    {
        get { lock (Gate) return ByName.Values.ToList(); }
    }

    public static IReadOnlyList<string> Names
    {
        get { lock (Gate) return ByName.Keys.ToList(); }
    }

    public static MethodDefinition Get(string name)
    {
        lock (Gate)
            return ByName.TryGetValue(name, out var m) ? m : throw new KeyNotFoundException($"unknown method '{name}' (known: {string.Join(", ", ByName.Keys)})");
    }

    /// <summary>Spec section names some method reads.</summary>
    public static IReadOnlySet<string> SectionNames
    {
        get { lock (Gate) return ByName.Values.Select(m => m.SectionName).OfType<string>().ToHashSet(); }
    }
}
