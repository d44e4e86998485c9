using System.Text;
using Distill.Engine.Specs;

namespace Distill.Engine.Methods;

/// <summary>What `Cluster.Seed methods` prints and docs/methods.md holds, from the registry and the spec records.</summary>
public static class MethodCatalog
{
    private static string TeacherText(TeacherUse t) => t switch
    {
        TeacherUse.Required => "a `teacher:` section (checkpoint or training)",
        TeacherUse.OwnArchitecture => "the student's own architecture trained normally (`teacher:` optional, same arch)",
        _ => "none",
    };

    /// <summary>A plain listing: each method, what it needs and its section's keys with their defaults.</summary>
    public static string Text()
    {
        var sb = new StringBuilder();
        foreach (var m in MethodRegistry.All)
        {
            sb.AppendLine($"{m.Name}  ({m.Reference})");
            sb.AppendLine($"  {m.Summary}");
            sb.AppendLine($"  teacher: {TeacherText(m.Teacher).Replace("`", "")}; student data: {(m.StudentSeesData ? "the training set" : "none (data-free)")}");
            if (m.SectionName is { } section) TextKeys(sb, SpecSection.Describe(m.SectionDefaults!, section).ToList());
            sb.AppendLine();
        }
        sb.AppendLine("keys of every spec (method: is one of the above; teacher: has the keys of student:)");
        TextKeys(sb, SpecSection.Describe(new RunSpec(), "").ToList());
        return sb.ToString();
    }

    private static void TextKeys(StringBuilder sb, List<SpecKeyInfo> keys)
    {
        var width = keys.Max(k => k.Path.Length);
        foreach (var k in keys) sb.AppendLine($"    {k.Path.PadRight(width)}  {k.Default,-10}  {k.Type}: {k.Doc}");
    }

    /// <summary>docs/methods.md: the methods and every key of a spec.</summary>
    public static string Markdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Methods and spec keys");
        sb.AppendLine();
        sb.AppendLine("Generated from the method registry and the spec records (`Cluster.Seed methods --markdown`);");
        sb.AppendLine("a test keeps this file equal to what the code declares.");
        sb.AppendLine();
        sb.AppendLine("Every method runs through the actor pipeline (`run`, `submit`) and the engine's loop (`run --engine`).");
        sb.AppendLine();
        sb.AppendLine("| method | what | teacher | student data | section |");
        sb.AppendLine("|---|---|---|---|---|");
        foreach (var m in MethodRegistry.All)
            sb.AppendLine($"| `{m.Name}` | {m.Summary} ({m.Reference}) | {TeacherText(m.Teacher)} | {(m.StudentSeesData ? "training set" : "none")} | {(m.SectionName is { } s ? $"`{s}:`" : "-")} |");
        foreach (var m in MethodRegistry.All.Where(m => m.SectionName is not null))
        {
            sb.AppendLine();
            sb.AppendLine($"## `{m.Name}`: the `{m.SectionName}:` section");
            sb.AppendLine();
            Keys(sb, SpecSection.Describe(m.SectionDefaults!, m.SectionName!));
        }
        sb.AppendLine();
        sb.AppendLine("## Keys of every spec");
        sb.AppendLine();
        sb.AppendLine("`method:` is one of the methods above; `teacher:` has the keys of `student:`.");
        sb.AppendLine();
        Keys(sb, SpecSection.Describe(new RunSpec(), ""));
        return sb.ToString();
    }

    private static void Keys(StringBuilder sb, IEnumerable<SpecKeyInfo> keys)
    {
        sb.AppendLine("| key | default | values | meaning |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var k in keys) sb.AppendLine($"| `{k.Path}` | {k.Default} | {k.Type.Replace("|", "\\|")} | {k.Doc} |");
    }
}
