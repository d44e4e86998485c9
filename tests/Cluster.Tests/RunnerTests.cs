using System.Text.Json;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>End-to-end runs of the engine on real MNIST, kept small.</summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class RunnerTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), "cd-runs-" + Guid.NewGuid().ToString("N"));

    public RunnerTests(MnistFixture _) => Torch.Init();

    public void Dispose()
    {
        if (Directory.Exists(root)) Directory.Delete(root, true);
    }

    private const string TinyDafl = """
        name: tiny-dafl
        method: dafl
        seed: 3
        data: {name: mnist, train_limit: 6000}
        teacher: {arch: lenet5, train: {epochs: 2, batch_size: 128, lr: 0.002}}
        student: {arch: lenet5-half, train: {lr: 0.002}}
        dafl: {steps: 40, batch_size: 32, generator_width: 16, eval_every: 20, sample_grid: 16, activation: code, entropy: code}
        guard: {check_every: 10}
        """;

    private RunResult Run(string yaml, string id, TextWriter? log = null) =>
        new Runner(new RunnerOptions { RunsRoot = root, RunId = id, TeacherCache = Path.Combine(root, "teachers"), LogEvery = 5 }, log ?? TextWriter.Null)
            .Run(SpecParser.Parse(yaml, id + ".yaml"));

    [Fact]
    public void Should_stop_between_two_steps_when_cancelled()
    {
        using var cts = new CancellationTokenSource();
        var log = new CancelAfter("[student] ", cts);
        var runner = new Runner(new RunnerOptions { RunsRoot = root, RunId = "cancelled", TeacherCache = Path.Combine(root, "teachers"), LogEvery = 5, Cancellation = cts.Token }, log);
        var spec = SpecParser.Parse("name: c\nmethod: supervised\ndata: {name: mnist, train_limit: 1024}\nstudent: {arch: lenet5-half, train: {steps: 100000, batch_size: 32}}\n", "c.yaml");
        Assert.Throws<OperationCanceledException>(() => runner.Run(spec));
        Assert.False(File.Exists(Path.Combine(root, "cancelled", "result.json")));
    }

    /// <summary>
    /// The teacher entity's training (PrepareTeacher) checkpoints as it goes, and a restarted node
    /// goes on from the newest checkpoint: stopped at step 25 of 60 and started again, it ends with
    /// the uninterrupted teacher's weights, bit for bit (data order, augmentation and optimiser included).
    /// </summary>
    [Theory]
    [InlineData("lenet5", 32, "lenet5-half")]
    [InlineData("hinton-1200", 28, "hinton-800-plain")]   // dropout: its masks come from the process RNG, kept beside each checkpoint
    public void Should_go_on_training_a_teacher_from_its_checkpoint_to_the_uninterrupted_weights(string arch, int size, string student)
    {
        var spec = SpecParser.Parse($"name: t\nmethod: kd\nseed: 4\ndata: {{name: mnist, image_size: {size}, train_limit: 1024}}\n" +
                                    $"teacher: {{arch: {arch}, train: {{steps: 60, batch_size: 32, lr: 0.002, augment: jitter, eval_every: 10}}}}\nstudent: {{arch: {student}, train: {{steps: 1}}}}\n" +
                                    "guard: {check_every: 5}\n", "t.yaml");   // with a guard, a checkpoint is taken only at a step it found healthy
        using var data = Distill.Engine.Training.DataSplits.Load(spec.Data);
        Runner Runner(CancellationToken ct, TextWriter log) => new(new RunnerOptions
            { RunsRoot = root, TeacherCache = Path.Combine(root, $"cache-{Guid.NewGuid():N}"), LogEvery = 5, Cancellation = ct, TeacherCheckpointEvery = TimeSpan.Zero }, log);
        var uninterrupted = Runner(default, TextWriter.Null).PrepareTeacher(spec, data, Path.Combine(root, "whole"));
        using var whole = uninterrupted.Teacher;
        Assert.Equal(0, uninterrupted.EarlierSeconds);

        var work = Path.Combine(root, "stopped");
        using var cts = new CancellationTokenSource();
        Assert.Throws<OperationCanceledException>(() => Runner(cts.Token, TextWriter.Null).PrepareTeacher(spec, data, work, (_, step, _) => { if (step >= 25) cts.Cancel(); }));
        Assert.Contains(Path.Combine(work, "checkpoints", "teacher-step0000025.ckpt"), Directory.GetFiles(Path.Combine(work, "checkpoints")));
        // newer ones that cannot be trusted are passed over: one whose hash does not match, one without a hash
        var ckpts = Path.Combine(work, "checkpoints");
        File.WriteAllBytes(Path.Combine(ckpts, "teacher-step0000026.ckpt"), File.ReadAllBytes(Path.Combine(ckpts, "teacher-step0000025.ckpt"))[..^10]);
        File.Copy(Path.Combine(ckpts, "teacher-step0000025.ckpt.sha256"), Path.Combine(ckpts, "teacher-step0000026.ckpt.sha256"));
        File.Copy(Path.Combine(ckpts, "teacher-step0000025.ckpt"), Path.Combine(ckpts, "teacher-step0000027.ckpt"));
        var log = new StringWriter();
        var steps = new List<long>();
        var prepared = Runner(default, log).PrepareTeacher(spec, data, work, (_, step, _) => steps.Add(step));
        using var resumed = prepared.Teacher;
        // the first command's training up to its checkpoint at step 25 counts in the teacher's time (teacher_seconds)
        Assert.True(prepared.EarlierSeconds > 0, $"earlier seconds {prepared.EarlierSeconds}");
        Assert.Contains("[teacher] resumed at step 25 from", log.ToString());
        var events = File.ReadAllText(Path.Combine(work, "events.log"));
        // the loop's marks came back with the checkpoint: the guard measures drops from the best of steps 10 and 20
        var evaluated = global::Cluster.Tests.Cluster.EmbeddedRunTests.MetricRows(Path.Combine(root, "whole", "metrics.csv"))
            .Where(r => r.Key.Phase == "teacher" && r.Key.Step <= 25 && r.Value.ContainsKey("test_accuracy")).ToList();
        Assert.Equal([10L, 20L], evaluated.Select(r => r.Key.Step).Order());
        Assert.Contains($"resumed at step 25 from {Path.Combine(ckpts, "teacher-step0000025.ckpt")} (0 rollback(s) so far, best evaluation {evaluated.Max(r => r.Value["test_accuracy"]):F2}%)", events);
        Assert.Contains("teacher-step0000027.ckpt not used to resume: no", events);
        Assert.Contains("teacher-step0000026.ckpt not used to resume: checkpoint", events);
        Assert.Equal(30, steps.Min());   // steps 1-25 are not trained again
        Assert.Equal(60, steps.Max());
        var (a, b) = (whole.state_dict(), resumed.state_dict());
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        Assert.All(a.Keys, k => Assert.True(a[k].eq(b[k]).all().item<bool>(), $"{k} differs from the uninterrupted teacher's"));
    }

    /// <summary>The engine loop's run that fails says so in its events.log (the error itself goes to the caller), as an actor run's does.</summary>
    [Fact]
    public void A_run_that_fails_says_so_in_its_events_log()
    {
        var bad = Path.Combine(root, "not-weights.pt");
        Directory.CreateDirectory(root);
        File.WriteAllText(bad, "these are not weights\n");
        var spec = SpecParser.Parse($"name: f\nmethod: supervised\ndata: {{name: mnist, train_limit: 256}}\nstudent: {{arch: lenet5-half, checkpoint: \"{bad}\", train: {{steps: 2}}}}\n", "f.yaml");
        var e = Assert.Throws<InvalidDataException>(() => new Runner(new RunnerOptions { RunsRoot = root, RunId = "failing" }, TextWriter.Null).Run(spec));
        Assert.StartsWith("student.checkpoint: ", e.Message);
        Assert.Contains($"failed: {e.Message}", File.ReadAllText(Path.Combine(root, "failing", "events.log")));
    }

    /// <summary>A run the guard gives up on says where its checkpoints are only when it wrote some.</summary>
    [Fact]
    public void A_run_that_diverges_before_its_first_checkpoint_does_not_point_at_checkpoints()
    {
        // an untrained teacher sees a class or two in the generator's batches: a collapse from step 1 on, before any checkpoint
        Directory.CreateDirectory(root);
        var teacher = Path.Combine(root, "untrained.pt");
        TorchSharp.torch.manual_seed(5);
        using (var untrained = ModelFactory.Create("lenet5", 1, 32, 10)) untrained.save(teacher);
        var spec = SpecParser.Parse(TinyDafl.Replace("teacher: {arch: lenet5, train: {epochs: 2, batch_size: 128, lr: 0.002}}", $"teacher: {{arch: lenet5, checkpoint: \"{teacher}\"}}")
                                        .Replace("guard: {check_every: 10}", "guard: {check_every: 1, min_classes: 9, max_rollbacks: 1}"), "d.yaml");
        var e = Assert.Throws<InvalidOperationException>(() => new Runner(new RunnerOptions { RunsRoot = root, RunId = "diverging" }, TextWriter.Null).Run(spec));
        Assert.Contains("after 1 rollbacks; it failed before its first checkpoint, so none was written", e.Message);
        Assert.Empty(Directory.GetFiles(Path.Combine(root, "diverging", "checkpoints")));
    }

    /// <summary>Cancels once a line with the prefix has been written (the loop has started).</summary>
    private sealed class CancelAfter(string prefix, CancellationTokenSource cts) : TextWriter
    {
        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;
        public override void WriteLine(string? value) { if (value?.StartsWith(prefix) == true) cts.Cancel(); }
    }

    /// <summary>A coordinator that takes over a run (failover, restart) appends to its metrics.csv under the header already there.</summary>
    [Fact]
    public void Should_append_to_an_existing_metrics_file_under_its_own_header()
    {
        var path = Path.Combine(root, "appended");
        using (var first = new RunDirectory(path))
        {
            first.Metrics("generator", 50, 1.5, new Dictionary<string, double> { ["loss_g"] = -4.5 }, ["loss_g", "lr_g"]);
            first.Metrics("student-0", 50, 1.75, new Dictionary<string, double> { ["lr_g"] = 0.25 }, ["loss_g", "lr_g"]);
        }
        using (var second = new RunDirectory(path))
            second.Metrics("student-0", 100, 3, new Dictionary<string, double> { ["lr_g"] = 0.5, ["test_accuracy"] = 90 }, ["test_accuracy", "lr_g"]);
        Assert.Equal(["phase,step,seconds,loss_g,lr_g", "generator,50,1.50,-4.5,", "student-0,50,1.75,,0.25", "student-0,100,3.00,,0.5"],
            File.ReadAllLines(Path.Combine(path, "metrics.csv")));
    }

    [Fact]
    public void Dafl_run_writes_the_run_directory_and_is_reproducible()
    {
        var a = Run(TinyDafl, "a");
        var dir = Path.Combine(root, "a");
        foreach (var f in new[] { "spec.yaml", "spec.resolved.yaml", "metrics.csv", "events.log", "result.json", "student.pt", "teacher.pt" })
            Assert.True(File.Exists(Path.Combine(dir, f)), $"{f} missing");
        Assert.Equal(2, Directory.GetFiles(Path.Combine(dir, "samples"), "*.png").Length);
        Assert.NotEmpty(Directory.GetFiles(Path.Combine(dir, "checkpoints"), "*.ckpt"));

        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "result.json")));
        var r = json.RootElement;
        foreach (var key in new[] { "method", "dataset", "teacher_accuracy", "student_accuracy", "steps", "wall_seconds", "device" })
            Assert.True(r.TryGetProperty(key, out _), $"result.json lacks {key}");
        Assert.Equal("dafl", r.GetProperty("method").GetString());
        Assert.False(r.GetProperty("student_used_real_data").GetBoolean());
        Assert.Equal(40, a.Steps);
        Assert.True(a.TeacherAccuracy > 90, $"teacher {a.TeacherAccuracy}");
        Assert.True(a.StudentAccuracy > 11, $"student learnt nothing: {a.StudentAccuracy}");

        // same spec, same seed, same device: the same numbers (the teacher now comes from the cache)
        var b = Run(TinyDafl, "b");
        Assert.True(b.TeacherFromCache == true);
        Assert.Equal(a.TeacherAccuracy, b.TeacherAccuracy);
        Assert.Equal(a.StudentAccuracy, b.StudentAccuracy);
        Assert.Equal(NumericMetrics(Path.Combine(dir, "metrics.csv")), NumericMetrics(Path.Combine(root, "b", "metrics.csv")));
    }

    /// <summary>The DAFL rows without the columns that measure the machine (seconds, resident memory).</summary>
    private static string[] NumericMetrics(string csv)
    {
        var lines = File.ReadAllLines(csv);
        var header = lines[0].Split(',');
        var drop = new[] { Array.IndexOf(header, "seconds"), Array.IndexOf(header, "rss_mb") };
        Assert.DoesNotContain(-1, drop);
        return lines.Where(l => l.StartsWith("dafl"))
            .Select(l => string.Join(',', l.Split(',').Where((_, i) => !drop.Contains(i))))
            .ToArray();
    }

    /// <summary>data.validation holds out the last N training images (after train_limit): the same images for every seed.</summary>
    [Fact]
    public void Validation_split_is_the_last_training_images()
    {
        using var all = Distill.Engine.Training.DataSplits.Load(new Distill.Engine.Specs.DataSpec { Name = "mnist", TrainLimit = 3000 });
        var spec = new Distill.Engine.Specs.DataSpec { Name = "mnist", TrainLimit = 3000, Validation = 500 };
        using var split = Distill.Engine.Training.DataSplits.Load(spec);
        Assert.False(all.HasValidation);
        Assert.True(split.HasValidation);
        Assert.Equal(2500, split.TrainX.shape[0]);
        Assert.Equal(2500, Distill.Engine.Training.DataSplits.TrainImages(spec));
        Assert.Equal(55_000, Distill.Engine.Training.DataSplits.TrainImages(new Distill.Engine.Specs.DataSpec { Name = "mnist", Validation = 5000 }));
        Assert.True(split.TrainX!.to(ScalarType.Float64).allclose(all.TrainX[..2500].to(ScalarType.Float64), 0, 0));
        Assert.True(split.ValidationX!.to(ScalarType.Float64).allclose(all.TrainX[2500..].to(ScalarType.Float64), 0, 0));
        Assert.True(split.ValidationY!.to(ScalarType.Float64).allclose(all.TrainY[2500..].to(ScalarType.Float64), 0, 0));
        Assert.True(split.TestX.to(ScalarType.Float64).allclose(all.TestX.to(ScalarType.Float64), 0, 0));
        Assert.Same(split.ValidationX, split.EvalX);
        Assert.Equal("val_accuracy", split.EvalMetric);
        Assert.Same(all.TestX, all.EvalX);
        Assert.Equal("test_accuracy", all.EvalMetric);
        var e = Assert.Throws<InvalidDataException>(() => Distill.Engine.Training.DataSplits.Load(new Distill.Engine.Specs.DataSpec { Name = "mnist", TrainLimit = 100, Validation = 100 }));
        Assert.Contains("validation", e.Message);
    }

    /// <summary>
    /// With a validation split, evaluations during training measure the held-out training images
    /// and the test set is measured once, at the end; result.json's figures are those of the saved
    /// student measured again here, image by image.
    /// </summary>
    [Fact]
    public void Validation_split_is_evaluated_during_training_and_the_test_set_once_at_the_end()
    {
        const string yaml = """
            name: tiny-val
            method: supervised
            seed: 4
            data: {name: mnist, image_size: 28, train_limit: 3000, validation: 1000, augment: jitter}
            student: {arch: hinton-400, train: {steps: 60, batch_size: 64, optimizer: sgd, lr: 0.05, eval_every: 20}}
            """;
        var r = Run(yaml, "val");
        var reader = new MetricsCsvReader();
        var rows = File.ReadLines(Path.Combine(root, "val", "metrics.csv")).Select(reader.Read).OfType<MetricsRecord>().ToList();
        Assert.Equal([20L, 40L, 60L], rows.Where(x => x.Values.ContainsKey("val_accuracy")).Select(x => x.Step));
        Assert.Equal([60L], rows.Where(x => x.Values.ContainsKey("test_accuracy")).Select(x => x.Step));
        Assert.Equal(rows.Max(x => x.Values.GetValueOrDefault("val_accuracy")), r.BestStudentAccuracy);

        using var data = Distill.Engine.Training.DataSplits.Load(new DataSpec { Name = "mnist", ImageSize = 28, TrainLimit = 3000 });
        using var student = ModelFactory.Create("hinton-400", 1, 28, 10);
        student.load(Path.Combine(root, "val", "student.pt"));
        student.eval();
        long Wrong(Tensor x, Tensor y)
        {
            using var _ = no_grad();
            using var predicted = student.call(x).argmax(1);
            var p = predicted.data<long>().ToArray();
            var t = y.data<long>().ToArray();
            return p.Where((v, i) => v != t[i]).Count();
        }
        var testWrong = Wrong(data.TestX, data.TestY);
        var valWrong = Wrong(data.TrainX[2000..], data.TrainY[2000..]);
        Assert.Equal(testWrong, r.StudentTestErrors);
        Assert.Equal(10_000, r.TestImages);
        Assert.Equal(100.0 * (10_000 - testWrong) / 10_000, r.StudentAccuracy, 9);
        Assert.Equal(100.0 * (1000 - valWrong) / 1000, r.ValidationAccuracy!.Value, 9);
    }

    [Fact]
    public void Kd_on_real_data_reports_teacher_student_and_baseline()
    {
        const string kd = """
            name: tiny-kd
            method: kd
            seed: 2
            compare_baseline: true
            data: {name: mnist, train_limit: 4000}
            teacher: {arch: lenet5, train: {epochs: 2, batch_size: 128, lr: 0.002}}
            student: {arch: lenet5-half, train: {epochs: 2, batch_size: 128, lr: 0.002}}
            baseline_train: {steps: 40, batch_size: 128, optimizer: adam, lr: 0.005}
            kd: {temperature: 4, alpha: 0.1}
            """;
        var log = new StringWriter();
        var r = Run(kd, "kd", log);
        Assert.True(r.TeacherAccuracy > 85, $"teacher {r.TeacherAccuracy}");
        Assert.True(r.StudentAccuracy > 80, $"student {r.StudentAccuracy}");
        Assert.True(r.BaselineAccuracy > 60, $"baseline {r.BaselineAccuracy}");
        Assert.True(r.StudentUsedRealData);
        // the student alone follows baseline_train (40 Adam steps at 0.005), the distilled one student.train (2 epochs of 4,000 images)
        Assert.Contains("[baseline] 40 steps", log.ToString());
        Assert.Equal(2 * (4000 / 128), r.Steps);
        var baseline = global::Cluster.Tests.Cluster.EmbeddedRunTests.MetricRows(Path.Combine(root, "kd", "metrics.csv")).Where(r => r.Key.Phase == "baseline").ToList();
        var baselineLrs = baseline.Where(r => r.Value.ContainsKey("lr")).Select(r => r.Value["lr"]).ToList();
        Assert.NotEmpty(baselineLrs);
        Assert.All(baselineLrs, v => Assert.Equal(0.005, v, 12));
        Assert.Equal(40, baseline.Max(r => r.Key.Step));
    }

    [Fact]
    public void Dafl_checkpoint_restores_the_exact_training_state()
    {
        manual_seed(1);
        var teacher = ModelFactory.Create("lenet5", 1, 32, 10);
        var studentA = ModelFactory.Create("lenet5-half", 1, 32, 10);
        var studentB = ModelFactory.Create("lenet5-half", 1, 32, 10);
        var spec = new DaflSpec { BatchSize = 16, GeneratorWidth = 8, Steps = 100 };
        using var a = new DaflTrainer(teacher, studentA, spec, new TrainSpec { Lr = 2e-3 }, CPU, 9);
        using var b = new DaflTrainer(teacher, studentB, spec, new TrainSpec { Lr = 2e-3 }, CPU, 123);
        for (var i = 0; i < 5; i++) a.TrainStep(false);
        Directory.CreateDirectory(root);
        using var dir = new RunDirectory(Path.Combine(root, "ckpt"));
        var path = dir.SaveCheckpoint(a);
        RunDirectory.LoadCheckpoint(b, path);
        Assert.Equal(5, b.Step);
        var ma = a.TrainStep(true)!;
        var mb = b.TrainStep(true)!;
        Assert.Equal(ma["loss_g"], mb["loss_g"]);
        Assert.Equal(ma["loss_kd"], mb["loss_kd"]);
    }

    [Fact]
    public void Corrupt_checkpoint_is_reported_by_name_and_changes_nothing()
    {
        manual_seed(1);
        var teacher = ModelFactory.Create("lenet5", 1, 32, 10);
        var student = ModelFactory.Create("lenet5-half", 1, 32, 10);
        using var t = new DaflTrainer(teacher, student, new DaflSpec { BatchSize = 8, GeneratorWidth = 8, Steps = 10 }, new TrainSpec(), CPU, 1);
        t.TrainStep(false);
        Directory.CreateDirectory(root);
        using var dir = new RunDirectory(Path.Combine(root, "corrupt"));
        var path = dir.SaveCheckpoint(t);
        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 0xFF;
        File.WriteAllBytes(path, bytes);
        var before = student.parameters().First().clone();
        var e = Assert.Throws<InvalidDataException>(() => RunDirectory.LoadCheckpoint(t, path));
        Assert.Contains(path, e.Message);
        Assert.Contains("corrupt", e.Message);
        Assert.True(student.parameters().First().allclose(before, 0, 0));
        Assert.Equal(1, t.Step);
    }

    [Fact]
    public void Deepinversion_run_grows_the_pool_and_trains_the_student()
    {
        const string di = """
            name: tiny-adi
            method: adi
            seed: 4
            data: {name: mnist, train_limit: 3000}
            teacher: {arch: resnet8, train: {epochs: 1, batch_size: 100, lr: 0.003}}
            student: {arch: lenet5-half, train: {lr: 0.002}}
            deepinversion: {rounds: 2, batch_size: 20, iterations: 6, student_steps: 5, student_batch: 16, sample_grid: 8}
            """;
        var r = Run(di, "adi");
        Assert.Equal(40, r.SynthesisedImages);
        Assert.Equal(2 * (6 + 5), r.Steps);
        Assert.False(r.StudentUsedRealData);
        Assert.Equal(2, Directory.GetFiles(Path.Combine(root, "adi", "samples"), "*.png").Length);
        var header = File.ReadLines(Path.Combine(root, "adi", "metrics.csv")).First();
        Assert.Contains("r_compete", header);
    }
}
