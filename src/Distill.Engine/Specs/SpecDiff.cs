namespace Distill.Engine.Specs;

/// <summary>How a spec differs from the one a run or sweep was started with, for the error that refuses it under the same id.</summary>
public static class SpecDiff
{
    /// <summary>
    /// The keys that differ, " (seed: 1, now 2; kd.alpha: 0.1, now 0.5)", at most five; empty where
    /// none does or either text does not parse. An option such as --seed or --device changes the spec too.
    /// </summary>
    public static string Describe(string before, string now)
    {
        try
        {
            var (a, b) = (Sweeps.ResultsTable.Flatten(before), Sweeps.ResultsTable.Flatten(now));
            var keys = a.Keys.Union(b.Keys).Where(k => a.GetValueOrDefault(k) != b.GetValueOrDefault(k)).Order(StringComparer.Ordinal).ToList();
            if (keys.Count == 0) return "";
            static string Show(string? v) => v ?? "(none)";
            return " (" + string.Join("; ", keys.Take(5).Select(k => $"{k}: {Show(a.GetValueOrDefault(k))}, now {Show(b.GetValueOrDefault(k))}")) + (keys.Count > 5 ? "; ..." : "") + ")";
        }
        catch (Exception e) when (e is YamlDotNet.Core.YamlException or InvalidCastException or InvalidOperationException or ArgumentException) { return ""; }
    }
}
