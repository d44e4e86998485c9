using Cluster.Seed.Commands;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The methods that learn from real data run through the same actors as the data-free ones (a
/// source entity serving the training set, the teacher entity labelling where the objective needs
/// it, the student entity), embedded in one process, and end with the engine loop's numbers.
/// </summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
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
        using var run = EngineParity.Run(method, $"""
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
        // the same loss at the same step: the student entity trains with the engine's objective on the engine's batches
        run.AssertSameNumbers("student", "loss", lossStep: 25, evalStep: 20);
        Assert.Equal(40, run.Actors.RootElement.GetProperty("steps").GetInt64());
        Assert.True(run.Actors.RootElement.GetProperty("student_used_real_data").GetBoolean());
        if (teacher.Length > 0 || method == "tfkd-self")
            Assert.Equal(run.Engine.RootElement.GetProperty("teacher_accuracy").GetDouble(), run.Actors.RootElement.GetProperty("teacher_accuracy").GetDouble());
    }

    /// <summary>
    /// The student's guard, embedded through the actors (one replica, and two) and in the engine
    /// loop: a teacher whose logits overflow (finite weights 1e20 times too large) makes every
    /// step's loss NaN; each rollback goes back to the seeded initial student (no checkpoint yet)
    /// with the learning rate in force halved, so two rollbacks compound to a quarter (the events
    /// give the scale the trainer holds after each), and then the run fails saying so.
    /// </summary>
    [Fact]
    public void Should_compound_the_guards_rollbacks_and_fail_after_its_limit_as_the_engine_does()
    {
        Torch.Init();
        var root = Path.Combine(Path.GetTempPath(), $"cd-guard-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        try
        {
            var teacher = Path.Combine(root, "overflowing.pt");
            TorchSharp.torch.manual_seed(1);
            using (var t = Distill.Engine.Models.ModelFactory.Create("lenet5", 1, 32, 10))
            {
                using (TorchSharp.torch.no_grad())
                    foreach (var p in t.parameters()) p.mul_(1e20);
                t.save(teacher);
            }
            var spec = Path.Combine(root, "nan.yaml");
            File.WriteAllText(spec, $$$"""
                name: nan
                method: kd
                seed: 3
                data: {name: mnist, image_size: 32, train_limit: 512}
                teacher: {arch: lenet5, checkpoint: "{{{teacher}}}"}
                student: {arch: lenet5-half, train: {steps: 20, batch_size: 64, eval_every: 10}}
                kd: {temperature: 4, alpha: 0}
                guard: {max_rollbacks: 2, lr_factor: 0.5, check_every: 1}
                cluster: {checkpoint_every: 10}
                """);
            // two replicas see only their slices' losses: each checks the mean gradient, the same on both
            File.WriteAllText(Path.Combine(root, "nan-replicas.yaml"), File.ReadAllText(spec).Replace("checkpoint_every: 10}", "checkpoint_every: 10, replicas: 2}"));
            foreach (var (id, file, extra, problem) in new[]
                     {
                         ("actors", spec, Array.Empty<string>(), "loss is NaN"),
                         ("replicas", Path.Combine(root, "nan-replicas.yaml"), [], "the replicas' mean gradient is NaN at element 0"),
                         ("engine", spec, ["--engine"], "loss is NaN"),
                     })
            {
                var output = new StringWriter();
                var code = CommandLine.Dispatch(["run", file, "--runs-dir", root, "--run-id", id, .. extra], output, output);
                var events = File.ReadAllText(Path.Combine(root, id, "events.log"));
                Assert.True(code != 0, output.ToString());
                Assert.True(events.Contains($"{problem} at step 1; rolled back"), events + output);
                Assert.Contains("(now 0.5x the schedule's; rollback 1)", events);
                Assert.Contains("(now 0.25x the schedule's; rollback 2)", events);
                Assert.DoesNotContain("rollback 3", events);
                Assert.Contains("after 2 rollbacks", events);
                Assert.False(File.Exists(Path.Combine(root, id, "result.json")));
                // a teacher near chance is used, and said to be
                Assert.Contains("warning: the loaded teacher scores 9.80% on the test set, near chance for 10 classes (10.0%)", events);
            }
            // with the guard off nothing rolls back, and both paths stop at the first NaN they read
            var off = Path.Combine(root, "nan-off.yaml");
            File.WriteAllText(off, File.ReadAllText(spec).Replace("guard: {max_rollbacks: 2, lr_factor: 0.5, check_every: 1}", "guard: {enabled: false}"));
            foreach (var (id, extra) in new[] { ("actors-off", Array.Empty<string>()), ("engine-off", ["--engine"]) })
            {
                var output = new StringWriter();
                Assert.True(CommandLine.Dispatch(["run", off, "--runs-dir", root, "--run-id", id, .. extra], output, output) != 0, output.ToString());
                var events = File.ReadAllText(Path.Combine(root, id, "events.log"));
                Assert.True(events.Contains("loss is NaN") && events.Contains("step 1") && !events.Contains("rolled back"), events + output);
                Assert.False(File.Exists(Path.Combine(root, id, "result.json")));
            }
        }
        finally { try { Directory.Delete(root, true); } catch (IOException) { } }
    }

    /// <summary>
    /// A teacher and a student that begin from weights files (the engine's own format and a
    /// PyTorch state_dict with a DataParallel prefix): the same numbers through the actors as in
    /// the engine loop, events.log says where the student began on both paths, and both run
    /// directories hold the teacher they used.
    /// </summary>
    [Fact]
    public void Should_begin_from_the_specs_weights_files_and_say_so_as_the_engine_does()
    {
        Torch.Init();
        var files = Path.Combine(Path.GetTempPath(), $"cd-from-files-{Guid.NewGuid():N}");
        Directory.CreateDirectory(files);
        try
        {
            var teacher = Path.Combine(files, "teacher.pt");
            var student = Path.Combine(files, "student.pth");
            TorchSharp.torch.manual_seed(11);
            using (var t = Distill.Engine.Models.ModelFactory.Create("lenet5", 1, 32, 10)) t.save(teacher);
            TorchSharp.torch.manual_seed(12);
            using (var m = Distill.Engine.Models.ModelFactory.Create("lenet5-half", 1, 32, 10))
                Distill.Engine.Interop.TorchSaveWriter.Write(student, m.state_dict().Select(kv => Distill.Engine.Interop.RawTensor.From("module." + kv.Key, kv.Value)).ToList());
            using var run = EngineParity.Run("from-files", $$$"""
                name: from-files
                method: kd
                seed: 3
                data: {name: mnist, image_size: 32, train_limit: 512}
                teacher: {arch: lenet5, checkpoint: "{{{teacher}}}"}
                student: {arch: lenet5-half, checkpoint: "{{{student}}}", train: {steps: 20, batch_size: 64, eval_every: 10, lr: 0.002}}
                kd: {temperature: 4, alpha: 0.1}
                cluster: {checkpoint_every: 10}
                """);
            run.AssertSameNumbers("student", "loss", lossStep: 20, evalStep: 10);
            foreach (var id in new[] { "actors", "engine" })
            {
                var events = File.ReadAllText(Path.Combine(run.Root, id, "events.log"));
                Assert.True(events.Contains($"student starts from {student}: PyTorch zip, 10 tensors, 'module.' prefix removed"), $"{id}: {events}");
                Assert.Contains($"teacher loaded from {teacher}: ClusterDistill", events);
                using var used = Distill.Engine.Interop.WeightFile.Open(Path.Combine(run.Root, id, "teacher.pt"));
                Assert.Equal("ClusterDistill", used.Format);
            }
        }
        finally { try { Directory.Delete(files, true); } catch (IOException) { } }
    }

    /// <summary>
    /// A spec that holds out a validation split gives the same numbers embedded and through the
    /// actors: evaluations on the split during training, the test set once at the last step, and
    /// result.json's test accuracy and errors (the actors' final evaluation is a second one).
    /// </summary>
    [Fact]
    public void Should_evaluate_the_validation_split_and_the_test_set_as_the_engine_does()
    {
        Torch.Init();
        using var run = EngineParity.Run("kd-val", """
            name: kd-val
            method: kd
            seed: 5
            data: {name: mnist, image_size: 32, train_limit: 1280, validation: 256}
            teacher: {arch: lenet5, train: {steps: 40, batch_size: 64, augment: jitter}}
            student:
              arch: lenet5-half
              train: {steps: 30, batch_size: 64, eval_every: 10, lr: 0.002}
            kd: {temperature: 4, alpha: 0.1}
            cluster: {checkpoint_every: 10}
            compare_baseline: true
            baseline_train: {steps: 30, batch_size: 64, eval_every: 15, optimizer: sgd, lr: 0.05}
            """);
        run.AssertSameNumbers("student", "loss", lossStep: 25, evalStep: 30);
        // compare_baseline: the actors train the student alone as the run actors-baseline, to the engine loop's baseline phase's numbers
        Assert.Equal(run.Engine.RootElement.GetProperty("baseline_accuracy").GetDouble(), run.Actors.RootElement.GetProperty("baseline_accuracy").GetDouble());
        Assert.Equal(run.Engine.RootElement.GetProperty("baseline_test_errors").GetInt64(), run.Actors.RootElement.GetProperty("baseline_test_errors").GetInt64());
        var baselineRows = EmbeddedRunTests.MetricRows(Path.Combine(run.Root, "actors-baseline", "metrics.csv"));
        Assert.Equal(run.EngineRows[("baseline", 25)]["loss"], baselineRows[("student-0", 25)]["loss"]);
        Assert.Equal(run.EngineRows[("baseline", 15)]["val_accuracy"], baselineRows[("student-0", 15)]["val_accuracy"]);
        Assert.Contains("method: supervised", File.ReadAllText(Path.Combine(run.Root, "actors-baseline", "spec.yaml")));
        foreach (var r in new[] { run.Engine.RootElement, run.Actors.RootElement })
        {
            Assert.Equal(run.Engine.RootElement.GetProperty("validation_accuracy").GetDouble(), r.GetProperty("validation_accuracy").GetDouble());
            Assert.Equal(run.Engine.RootElement.GetProperty("student_test_errors").GetInt64(), r.GetProperty("student_test_errors").GetInt64());
            Assert.Equal(run.Engine.RootElement.GetProperty("teacher_accuracy").GetDouble(), r.GetProperty("teacher_accuracy").GetDouble());
            Assert.Equal(10_000, r.GetProperty("test_images").GetInt64());
        }
        Assert.Equal(run.EngineRows[("student", 20)]["val_accuracy"], run.ActorRows[("student-0", 20)]["val_accuracy"]);
        Assert.Equal(run.EngineRows[("student", 30)]["val_accuracy"], run.Actors.RootElement.GetProperty("validation_accuracy").GetDouble(), 3);
        foreach (var rows in new[] { run.EngineRows, run.ActorRows })
        {
            Assert.Equal([30L], rows.Where(x => x.Key.Phase.StartsWith("student") && x.Value.ContainsKey("test_accuracy")).Select(x => x.Key.Step));
            Assert.Equal([10L, 20L, 30L], rows.Where(x => x.Key.Phase.StartsWith("student") && x.Value.ContainsKey("val_accuracy")).Select(x => x.Key.Step).Order());
        }
    }
}
