using System.Text.Json;
using Cluster.Seed.Commands;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The methods that learn from real data run through the same actors as the data-free ones (a
/// source entity serving the training set, the teacher entity labelling where the objective needs
/// it, the student entity), embedded in one process, and end with the engine loop's numbers.
/// </summary>
[Collection("mnist")]
public sealed class RealDataPipelineTests
{
    public static TheoryData<string, string, string> Methods => new()
    {
        { "supervised", "", "" },
        { "lsr", "", "lsr: {epsilon: 0.2}" },
        { "kd", "teacher: {arch: lenet5, train: {steps: 40, batch_size: 64}}", "kd: {temperature: 4, alpha: 0.3}" },
        { "tfkd-self", "", "kd: {temperature: 20, alpha: 0.1}" },
        { "tfkd-reg", "", "tfkd_reg: {temperature: 20, alpha: 0.2, correct_probability: 0.9}" },
    };

    [Theory]
    [MemberData(nameof(Methods))]
    public void Should_reach_exactly_the_engine_loops_accuracy_through_the_actors(string method, string teacher, string section)
    {
        Torch.Init();
        var root = Path.Combine(Path.GetTempPath(), $"cd-real-{method}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        var spec = Path.Combine(root, $"{method}.yaml");
        File.WriteAllText(spec, $"""
            name: {method}-tiny
            method: {method}
            seed: 3
            data: {"{"}name: mnist, image_size: 32, train_limit: 1024{"}"}
            {teacher}
            student:
              arch: lenet5-half
              train: {"{"}steps: 40, batch_size: 64, eval_every: 20, lr: 0.002{"}"}
            {section}
            cluster: {"{"}checkpoint_every: 10{"}"}
            """);
        try
        {
            var outA = new StringWriter();
            Assert.True(CommandLine.Dispatch(["run", spec, "--runs-dir", root, "--run-id", "actors"], outA, outA) == 0, outA.ToString());
            var outB = new StringWriter();
            Assert.True(CommandLine.Dispatch(["run", spec, "--runs-dir", root, "--run-id", "engine", "--engine"], outB, outB) == 0, outB.ToString());
            using var a = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "actors", "result.json")));
            using var b = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "engine", "result.json")));
            Assert.StartsWith("actors", a.RootElement.GetProperty("pipeline").GetString());
            Assert.Equal(40, a.RootElement.GetProperty("steps").GetInt64());
            Assert.True(a.RootElement.GetProperty("student_used_real_data").GetBoolean());
            Assert.Equal(b.RootElement.GetProperty("student_accuracy").GetDouble(), a.RootElement.GetProperty("student_accuracy").GetDouble());
            if (teacher.Length > 0 || method == "tfkd-self")
                Assert.Equal(b.RootElement.GetProperty("teacher_accuracy").GetDouble(), a.RootElement.GetProperty("teacher_accuracy").GetDouble());
            // the same loss at the same step: the student entity trains with the engine's objective on the engine's batches
            var actorRows = EmbeddedRunTests.MetricRows(Path.Combine(root, "actors", "metrics.csv"));
            var engineRows = EmbeddedRunTests.MetricRows(Path.Combine(root, "engine", "metrics.csv"));
            Assert.Equal(engineRows[("student", 25)]["loss"], actorRows[("student-0", 25)]["loss"]);
            Assert.Equal(engineRows[("student", 20)]["test_accuracy"], actorRows[("student-0", 20)]["test_accuracy"]);
        }
        finally
        {
            try { Directory.Delete(root, true); } catch (IOException) { }
        }
    }
}
