using System.Text.Json;
using Cluster.Seed.Commands;

namespace Cluster.Tests.Cluster;

/// <summary>`run` on a DAFL spec goes through a one-node cluster (real Akka.Cluster, sharding, singleton, SQLite journal).</summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class EmbeddedRunTests
{
    [Fact]
    public void Should_reach_exactly_the_engine_loops_accuracy_through_the_actor_pipeline()
    {
        Torch.Init();
        var root = Path.Combine(Path.GetTempPath(), $"cd-embedded-{Guid.NewGuid():N}");
        var spec = Path.Combine(root, "tiny.yaml");
        Directory.CreateDirectory(root);
        File.WriteAllText(spec, ActorHarness.Spec("tiny", steps: 30, evalEvery: 10, checkpointEvery: 10, generatorCheckpointEvery: 10)
            .Replace("train: {steps: 20, batch_size: 64}", "train: {steps: 120, batch_size: 128, lr: 0.002}")
            // as the quick spec (the main job) runs: the generator's output clamped to the pixel range
            .Replace("entropy: code,", "entropy: code, clamp_to_pixel_range: true,"));
        try
        {
            var outA = new StringWriter();
            Assert.Equal(0, CommandLine.Dispatch(["run", spec, "--runs-dir", root, "--run-id", "actors"], outA, outA));
            var outB = new StringWriter();
            Assert.Equal(0, CommandLine.Dispatch(["run", spec, "--runs-dir", root, "--run-id", "engine", "--engine"], outB, outB));
            using var a = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "actors", "result.json")));
            using var b = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "engine", "result.json")));
            Assert.StartsWith("actors", a.RootElement.GetProperty("pipeline").GetString());
            Assert.Equal("engine", b.RootElement.GetProperty("pipeline").GetString());
            Assert.Equal(30, a.RootElement.GetProperty("steps").GetInt64());
            Assert.Equal(b.RootElement.GetProperty("teacher_accuracy").GetDouble(), a.RootElement.GetProperty("teacher_accuracy").GetDouble());
            // same seed, same numbers: the pipeline is the engine's computation, only distributed
            Assert.Equal(b.RootElement.GetProperty("student_accuracy").GetDouble(), a.RootElement.GetProperty("student_accuracy").GetDouble());
            Assert.True(File.Exists(Path.Combine(root, "actors", "journal.db")), "the embedded journal is a SQLite file in the run directory");
            Assert.True(File.Exists(Path.Combine(root, "actors", "student.pt")));

            // the run directory is the engine loop's: the coordinator writes what the entities report
            string A(string f) => Path.Combine(root, "actors", f);
            string B(string f) => Path.Combine(root, "engine", f);
            // (line 1 names the file submitted: the embedded run submits a copy in its run directory)
            Assert.Equal(File.ReadAllLines(B("spec.resolved.yaml")).Skip(1), File.ReadAllLines(A("spec.resolved.yaml")).Skip(1));
            Assert.Equal(File.ReadAllBytes(B("teacher.pt")), File.ReadAllBytes(A("teacher.pt")));
            // the student for PyTorch, written by the coordinator as by the engine loop
            foreach (var export in new[] { Distill.Engine.Interop.StudentExport.PyTorchFile, Distill.Engine.Interop.StudentExport.SafetensorsFile })
                Assert.Equal(File.ReadAllBytes(B(export)), File.ReadAllBytes(A(export)));
            var actorRows = MetricRows(A("metrics.csv"));
            var engineRows = MetricRows(B("metrics.csv"));
            foreach (var step in new[] { 10L, 20, 30 })
            {
                Assert.Equal(engineRows[("dafl", step)]["test_accuracy"], actorRows[("student-0", step)]["test_accuracy"]);
                // the same generator at the same step draws the same grid
                Assert.Equal(File.ReadAllBytes(B($"samples/dafl-step{step:D7}.png")), File.ReadAllBytes(A($"samples/generator-step{step:D7}.png")));
            }
            Assert.Equal(engineRows[("dafl", 25)]["loss_kd"], actorRows[("student-0", 25)]["loss_kd"]);
            Assert.Equal(engineRows[("dafl", 25)]["lr_s"], actorRows[("student-0", 25)]["lr_s"]);
            var events = File.ReadAllText(A("events.log"));
            Assert.Contains("run actors accepted: method dafl", events);
            Assert.Contains("teacher ready:", events);
            // how the teacher entity got its teacher; its rows (when it trained) came through the coordinator
            var fromCache = a.RootElement.GetProperty("teacher_from_cache").GetBoolean();
            Assert.True(a.RootElement.GetProperty("teacher_seconds").GetDouble() > 0);
            Assert.Contains(fromCache ? "from the cache in" : "prepared in", events);
            Assert.Equal(!fromCache, actorRows.Keys.Any(k => k.Phase == "teacher"));
            Assert.False(File.Exists(A("teacher/metrics.csv")), "the teacher entity writes no CSV of its own");
            Assert.Contains($"done: student {a.RootElement.GetProperty("student_accuracy").GetDouble():F2}%", events);

            // the same run id again is the same run: it is complete, so nothing is redone
            var outC = new StringWriter();
            Assert.Equal(0, CommandLine.Dispatch(["run", spec, "--runs-dir", root, "--run-id", "actors"], outC, outC));
            Assert.Contains("completed step 30/30", outC.ToString());
            Assert.DoesNotContain("[teacher]", outC.ToString());
        }
        finally
        {
            try { Directory.Delete(root, true); } catch (IOException) { }
        }
    }

    /// <summary>metrics.csv as (phase, step) -> the row's non-empty numeric columns.</summary>
    internal static Dictionary<(string Phase, long Step), Dictionary<string, double>> MetricRows(string file)
    {
        var lines = File.ReadAllLines(file);
        var header = lines[0].Split(',');
        Assert.Equal(["phase", "step", "seconds"], header[..3]);
        var rows = new Dictionary<(string, long), Dictionary<string, double>>();
        foreach (var line in lines.Skip(1))
        {
            var cells = line.Split(',');
            Assert.Equal(header.Length, cells.Length);
            var values = new Dictionary<string, double>();
            for (var i = 3; i < cells.Length; i++)
                if (cells[i].Length > 0) values[header[i]] = double.Parse(cells[i], System.Globalization.CultureInfo.InvariantCulture);
            rows[(cells[0], long.Parse(cells[1]))] = values;
        }
        return rows;
    }

    /// <summary>
    /// DeepInversion and ADI through the actors: the generator entity synthesises rounds (ADI's
    /// against the weights the student offers at each round's end), the student samples the pool
    /// it receives; the final weights are those of the engine's one loop, bit for bit.
    /// </summary>
    [Theory]
    [InlineData("deepinversion")]
    [InlineData("adi")]
    public void Should_train_deepinversion_through_the_actors_to_the_engine_loops_exact_weights(string method)
    {
        Torch.Init();
        var root = Path.Combine(Path.GetTempPath(), $"cd-embedded-{method}-{Guid.NewGuid():N}");
        var spec = Path.Combine(root, "tiny.yaml");
        Directory.CreateDirectory(root);
        File.WriteAllText(spec, $$"""
            name: tiny-{{method}}
            method: {{method}}
            seed: 3
            data: {name: mnist, image_size: 32}
            teacher:
              arch: resnet8
              train: {steps: 60, batch_size: 64, optimizer: sgd, lr: 0.05}
            student:
              arch: lenet5-half
              train: {optimizer: adam, lr: 0.002}
            deepinversion: {rounds: 3, batch_size: 16, iterations: 12, student_steps: 8, student_batch: 16, jitter: 2, flip: true{{(method == "adi" ? ", competition_weight: 1" : "")}} }
            cluster: {generator_checkpoint_every: 5}
            """);
        try
        {
            var outA = new StringWriter();
            Assert.Equal(0, CommandLine.Dispatch(["run", spec, "--runs-dir", root, "--run-id", "actors"], outA, outA));
            var outB = new StringWriter();
            Assert.Equal(0, CommandLine.Dispatch(["run", spec, "--runs-dir", root, "--run-id", "engine", "--engine"], outB, outB));
            using var a = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "actors", "result.json")));
            using var b = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "engine", "result.json")));
            Assert.StartsWith("actors", a.RootElement.GetProperty("pipeline").GetString());
            Assert.Equal(method, a.RootElement.GetProperty("method").GetString());
            Assert.Equal(24, a.RootElement.GetProperty("steps").GetInt64());   // student steps: 3 rounds x 8
            Assert.Equal(48, a.RootElement.GetProperty("synthesised_images").GetInt64());
            Assert.Equal(b.RootElement.GetProperty("synthesised_images").GetInt64(), a.RootElement.GetProperty("synthesised_images").GetInt64());
            Assert.Equal(b.RootElement.GetProperty("student_accuracy").GetDouble(), a.RootElement.GetProperty("student_accuracy").GetDouble());
            Assert.Equal(File.ReadAllBytes(Path.Combine(root, "engine", "student.pt")), File.ReadAllBytes(Path.Combine(root, "actors", "student.pt")));
        }
        finally
        {
            try { Directory.Delete(root, true); } catch (IOException) { }
        }
    }
}
