using System.Text.Json;
using Distill.Engine.Methods;

namespace Cluster.Tests.Cluster;

/// <summary>
/// Every registered method, submitted to a cluster of three processes (a seed and two GPU nodes on
/// 127.0.0.1, PostgreSQL journal), completes: the actors know entity kinds, not methods.
/// </summary>
[Collection(ProcessLanes.A)]
public sealed class AllMethodsProcessTests
{
    /// <summary>A small spec of the method: its section at its defaults but for the sizes, and a teacher where it needs one.</summary>
    internal static string TinySpec(MethodDefinition m, string teacherCheckpoint, string resnetTeacher)
    {
        var dataFree = !m.StudentSeesData;
        var teacher = m.Teacher != TeacherUse.Required ? ""
            : m.SectionName == "deepinversion" ? $"teacher: {{arch: resnet8, checkpoint: {resnetTeacher}}}"
            : $"teacher: {{arch: lenet5, checkpoint: {teacherCheckpoint}}}";
        var section = m.SectionName switch
        {
            "dafl" => "dafl: {steps: 12, batch_size: 16, generator_width: 8, generator_lr: 0.02, eval_every: 6}",
            "deepinversion" => "deepinversion: {rounds: 2, batch_size: 16, iterations: 6, student_steps: 6, student_batch: 16}",
            null => "",
            // any other section: its defaults, sized down where it has the usual keys
            var s => $"{s}: {{{string.Join(", ", Sizes(m))}}}",
        };
        var train = dataFree ? "{optimizer: adam, lr: 0.002}" : "{steps: 12, batch_size: 32, eval_every: 6}";
        return $"""
            name: all-{m.Name}
            method: {m.Name}
            seed: 2
            data: {"{"}name: mnist, image_size: 32, train_limit: 512{"}"}
            {teacher}
            student:
              arch: lenet5-half
              train: {train}
            {section}
            cluster: {"{"}checkpoint_every: 4{"}"}
            """;
    }

    private static IEnumerable<string> Sizes(MethodDefinition m)
    {
        var keys = Distill.Engine.Specs.SpecSection.Describe(m.SectionDefaults!, "").Select(k => k.Path).ToHashSet();
        foreach (var (key, value) in new[] { ("steps", "12"), ("batch_size", "16"), ("eval_every", "6") })
            if (keys.Contains(key)) yield return $"{key}: {value}";
    }

    [Fact]
    public void Should_complete_every_method_submitted_to_a_three_process_cluster()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("allmethods");
        var lenet = cluster.SaveTeacher(51);
        var resnet = cluster.SaveModel("resnet8", 52, "resnet8.pt");

        var port = TestPorts.Block(4);
        var seeds = $"127.0.0.1:{port}";
        cluster.Start(cluster.SeedBin, "seed.log", ["serve", "--port", port.ToString(), "--http-port", cluster.HttpPort.ToString(), .. cluster.Common]);
        Thread.Sleep(3000);
        // every method at once: slots enough for all of them
        cluster.Start(cluster.GpuBin, "gpu-1.log", ["join", "--seeds", seeds, "--port", (port + 1).ToString(), "--slots", "5", .. cluster.Common]);
        cluster.Start(cluster.GpuBin, "gpu-2.log", ["join", "--seeds", seeds, "--port", (port + 2).ToString(), "--slots", "5", .. cluster.Common]);
        cluster.WaitUntilUp(DateTime.UtcNow.AddMinutes(2), "gpu-1.log", "gpu-2.log");

        var submits = MethodRegistry.All.Select(m =>
        {
            var spec = Path.Combine(cluster.Work, $"{m.Name}.yaml");
            File.WriteAllText(spec, TinySpec(m, lenet, resnet));
            return (Method: m.Name, Process: cluster.Start(cluster.SeedBin, $"submit-{m.Name}.log", ["submit", spec, "--server", cluster.Server, "--run-id", $"all-{m.Name}", "--follow"]));
        }).ToList();
        var deadline = DateTime.UtcNow.AddMinutes(6);
        foreach (var (method, p) in submits)
        {
            var left = deadline - DateTime.UtcNow;
            Assert.True(left > TimeSpan.Zero && p.WaitForExit(left), $"{method} did not finish: " + cluster.Logs(l => l.Contains("ready"), 15));
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, $"{method} failed: " + cluster.Log($"submit-{method}.log"));
        }
        foreach (var (method, _) in submits)
        {
            using var result = JsonDocument.Parse(File.ReadAllText(Path.Combine(cluster.Work, "runs", $"all-{method}", "result.json")));
            Assert.Equal(method, result.RootElement.GetProperty("method").GetString());
            Assert.StartsWith("actors", result.RootElement.GetProperty("pipeline").GetString());
            Assert.InRange(result.RootElement.GetProperty("student_accuracy").GetDouble(), 0, 100);
        }
    }
}
