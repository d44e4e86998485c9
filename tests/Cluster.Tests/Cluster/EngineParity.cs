using System.Text.Json;
using Cluster.Seed.Commands;

namespace Cluster.Tests.Cluster;

/// <summary>
/// One spec run twice in a temporary folder, embedded through the actors (`run`) and by the engine
/// loop (`run --engine`), for tests that the two compute the same numbers.
/// </summary>
internal sealed class EngineParity : IDisposable
{
    private readonly string root;

    private EngineParity(string root, JsonDocument actors, JsonDocument engine)
    {
        this.root = root;
        Actors = actors;
        Engine = engine;
        ActorRows = EmbeddedRunTests.MetricRows(Path.Combine(root, "actors", "metrics.csv"));
        EngineRows = EmbeddedRunTests.MetricRows(Path.Combine(root, "engine", "metrics.csv"));
    }

    /// <summary>The folder of both runs (the actors' run is "actors", the engine's "engine").</summary>
    public string Root => root;
    public JsonDocument Actors { get; }
    public JsonDocument Engine { get; }
    public Dictionary<(string Phase, long Step), Dictionary<string, double>> ActorRows { get; }
    public Dictionary<(string Phase, long Step), Dictionary<string, double>> EngineRows { get; }

    public static EngineParity Run(string name, string yaml)
    {
        var root = Path.Combine(Path.GetTempPath(), $"cd-parity-{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        var spec = Path.Combine(root, $"{name}.yaml");
        File.WriteAllText(spec, yaml);
        try
        {
            var outA = new StringWriter();
            Assert.True(CommandLine.Dispatch(["run", spec, "--runs-dir", root, "--run-id", "actors"], outA, outA) == 0, outA.ToString());
            var outB = new StringWriter();
            Assert.True(CommandLine.Dispatch(["run", spec, "--runs-dir", root, "--run-id", "engine", "--engine"], outB, outB) == 0, outB.ToString());
            return new EngineParity(root,
                JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "actors", "result.json"))),
                JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "engine", "result.json"))));
        }
        catch
        {
            try { Directory.Delete(root, true); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>The same final accuracy, and the same loss and test accuracy at the given steps (the engine loop's rows are under its phase, the actors' under student-0).</summary>
    public void AssertSameNumbers(string enginePhase, string lossColumn, long lossStep, long evalStep)
    {
        Assert.StartsWith("actors", Actors.RootElement.GetProperty("pipeline").GetString());
        Assert.Equal(Engine.RootElement.GetProperty("student_accuracy").GetDouble(), Actors.RootElement.GetProperty("student_accuracy").GetDouble());
        Assert.Equal(EngineRows[(enginePhase, lossStep)][lossColumn], ActorRows[("student-0", lossStep)][lossColumn]);
        var evaluated = EngineRows[(enginePhase, evalStep)].ContainsKey("val_accuracy") ? "val_accuracy" : "test_accuracy";
        Assert.Equal(EngineRows[(enginePhase, evalStep)][evaluated], ActorRows[("student-0", evalStep)][evaluated]);
    }

    public void Dispose()
    {
        Actors.Dispose();
        Engine.Dispose();
        try { Directory.Delete(root, true); } catch (IOException) { }
    }
}
