using System.Reflection;
using Distill.Engine.Methods;
using Distill.Engine.Specs;

namespace Cluster.Tests;

/// <summary>One registry of methods drives the spec parser, the resolved spec, `methods` and docs/methods.md.</summary>
public sealed class MethodRegistryTests
{
    private const string Adi = """
        name: a
        method: adi
        data: {name: mnist}
        teacher: {arch: resnet8, train: {epochs: 1}}
        student: {arch: lenet5-half}

        """;

    public static IEnumerable<object[]> ShippedSpecs() =>
        Directory.GetFiles(Path.Combine(Repo.Root(), "specs"), "*.yaml").Order().Select(f => new object[] { Path.GetFileName(f) });

    [Fact]
    public void Should_register_every_method_of_the_spec_under_its_spec_name()
    {
        foreach (var name in new[] { "supervised", "kd", "lsr", "tfkd-self", "tfkd-reg", "dafl", "deepinversion", "adi" })
            Assert.Equal(name, MethodRegistry.Get(name).Name);
        Assert.Equal(MethodRegistry.Names.Count, MethodRegistry.Names.Distinct().Count());
        var e = Assert.Throws<InvalidOperationException>(() => MethodRegistry.Register(new KdMethod()));
        Assert.Contains("'kd' is registered twice", e.Message);
    }

    [Fact]
    public void Should_accept_adi_without_a_deepinversion_section_with_the_documented_defaults()
    {
        var s = SpecParser.Parse(Adi, "adi.yaml");
        Assert.Equal(1, s.SettingsOf<DeepInversionSpec>().CompetitionWeight);
        Assert.Equal(new DeepInversionSpec().Rounds, s.SettingsOf<DeepInversionSpec>().Rounds);
        // the same section read for deepinversion takes that method's default (no competition)
        var di = SpecParser.Parse(Adi.Replace("method: adi", "method: deepinversion"), "di.yaml");
        Assert.Equal(0, di.SettingsOf<DeepInversionSpec>().CompetitionWeight);
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(Adi + "deepinversion: {competition_weight: 0}\n", "adi.yaml"));
        Assert.Equal("deepinversion.competition_weight", e.Key);
        Assert.Contains("adi needs a competition weight > 0", e.Message);
    }

    [Theory]
    [MemberData(nameof(ShippedSpecs))]
    public void Should_write_a_resolved_spec_that_parses_back_to_the_same_spec(string file)
    {
        var spec = SpecParser.Load(Path.Combine(Repo.Root(), "specs", file));
        var resolved = SpecParser.Write(spec);
        var again = SpecParser.Parse(resolved, "resolved.yaml");
        Assert.Equal(resolved, SpecParser.Write(again));
        Assert.Equal(spec.Method, again.Method);
        Assert.Equal(spec.Settings, again.Settings);
        Assert.Equal(spec.Student.Train.Lr, again.Student.Train.Lr);
        // every default is written out
        Assert.Contains("eval_batch: ", resolved);
        Assert.Contains("max_rollbacks: ", resolved);
    }

    [Fact]
    public void Should_write_every_value_exactly()
    {
        var s = SpecParser.Parse(Adi + "deepinversion: {lr: 0.123456789012345, l2_weight: 1e-7, flip: false}\n", "adi.yaml");
        var back = SpecParser.Parse(SpecParser.Write(s), "r.yaml").SettingsOf<DeepInversionSpec>();
        Assert.Equal(0.123456789012345, back.Lr);
        Assert.Equal(1e-7, back.L2Weight);
        Assert.False(back.Flip);
        Assert.Equal(1, back.CompetitionWeight);
    }

    [Fact]
    public void Should_take_cross_section_checks_from_the_method()
    {
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse("""
            name: t
            method: tfkd-self
            data: {name: mnist}
            teacher: {arch: lenet5, train: {epochs: 1}}
            student: {arch: lenet5-half, train: {epochs: 1}}
            """, "t.yaml"));
        Assert.Equal("teacher.arch", e.Key);
        Assert.StartsWith("t.yaml:4:", e.Message);
        var d = Assert.Throws<SpecException>(() => SpecParser.Parse(Adi.Replace("method: adi", "method: dafl") + "cluster: {replicas: 3}\ndafl: {batch_size: 64}\n", "d.yaml"));
        Assert.Equal("cluster.replicas", d.Key);
        Assert.Contains("does not split evenly over 3 replicas", d.Message);
    }

    [Fact]
    public void Should_read_an_empty_section_as_the_methods_defaults()
    {
        foreach (var m in MethodRegistry.All.Where(m => m.SectionName is not null))
        {
            var parsed = SpecSection.Parse<object>(null, m.SectionDefaults!, "x.yaml", m.SectionName!);
            Assert.Equal(m.SectionDefaults, parsed);
            Assert.NotSame(m.SectionDefaults, parsed);
            Assert.All(SpecSection.Describe(m.SectionDefaults!, m.SectionName!), k => Assert.False(string.IsNullOrWhiteSpace(k.Doc), k.Path));
        }
    }

    [Fact]
    public void Should_keep_docs_methods_md_equal_to_what_the_registry_declares()
    {
        var committed = File.ReadAllText(Path.Combine(Repo.Root(), "docs", "methods.md"));
        Assert.True(committed == MethodCatalog.Markdown(),
            "docs/methods.md is out of date: regenerate it with `dotnet run --project src/Cluster.Seed -- methods --markdown > docs/methods.md`");
        foreach (var m in MethodRegistry.All) Assert.Contains($"| `{m.Name}` |", committed);
        Assert.Contains("`deepinversion.competition_weight` | 1 |", committed);
    }

    [Fact]
    public void Should_keep_the_engine_free_of_akka_directly_and_through_its_references()
    {
        var seen = new HashSet<string>();
        var queue = new Queue<Assembly>([typeof(SpecParser).Assembly]);
        while (queue.TryDequeue(out var a))
            foreach (var r in a.GetReferencedAssemblies())
            {
                Assert.False(r.Name!.StartsWith("Akka") || r.Name.StartsWith("Cluster."), $"{a.GetName().Name} references {r.Name}");
                if (r.Name.StartsWith("System") || r.Name.StartsWith("Microsoft") || r.Name is "netstandard" or "mscorlib" || !seen.Add(r.Name)) continue;
                queue.Enqueue(Assembly.Load(r));
            }
        Assert.Contains("TorchSharp", seen);
        Assert.Contains("YamlDotNet", seen);
    }
}
