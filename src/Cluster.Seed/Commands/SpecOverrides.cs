using System.CommandLine;
using Distill.Engine.Specs;

namespace Cluster.Seed.Commands;

/// <summary>--device and --seed, which replace the spec's keys (run and submit).</summary>
internal sealed class SpecOverrides
{
    public Option<string?> Device { get; } = new("--device")
    {
        Description = "replaces the spec's device: cpu, cuda or auto",
        HelpName = "cpu|cuda|auto",
        CustomParser = r =>
        {
            var v = r.Tokens.Single().Value;
            if (v is "cpu" or "cuda" or "auto") return v;
            r.AddError($"--device {v}: cpu, cuda or auto");
            return null;
        },
    };

    public Option<int?> Seed { get; } = new("--seed")
    {
        Description = "replaces the spec's seed (a non-negative integer)",
        CustomParser = r =>
        {
            var v = r.Tokens.Single().Value;
            if (int.TryParse(v, out var seed) && seed >= 0) return seed;
            r.AddError($"--seed {v}: a non-negative integer");
            return null;
        },
    };

    public void AddTo(Command c)
    {
        c.Add(Device);
        c.Add(Seed);
    }

    /// <summary>
    /// The spec file's text with the overrides as its last keys (the earlier ones commented out:
    /// YAML forbids duplicates), and the spec it parses to. The text is what the run records.
    /// </summary>
    public (string Yaml, RunSpec Spec) Apply(ParseResult p, string file)
    {
        var yaml = File.Exists(file) ? File.ReadAllText(file) : throw new SpecException(file, "", Directory.Exists(file) ? "a folder, not a spec file" : "file not found");
        foreach (var (key, value) in new[] { ("device", p.GetValue(Device)), ("seed", p.GetValue(Seed)?.ToString()) })
        {
            if (value is null) continue;
            var lines = yaml.Split('\n').Select(l => l.StartsWith($"{key}:") ? "# (overridden) " + l : l);
            yaml = string.Join('\n', lines) + $"\n# --{key} {value}\n{key}: {value}\n";
        }
        return (yaml, SpecParser.Parse(yaml, file));
    }
}
