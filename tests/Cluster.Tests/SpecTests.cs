using Distill.Engine.Methods;
using Distill.Engine.Specs;

namespace Cluster.Tests;

public sealed class SpecTests
{
    private static string SpecsDir()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !Directory.Exists(Path.Combine(d.FullName, "specs"))) d = d.Parent;
        return Path.Combine(d?.FullName ?? throw new DirectoryNotFoundException("specs/ not found above the test binaries"), "specs");
    }

    public static IEnumerable<object[]> ShippedSpecs() =>
        Directory.GetFiles(SpecsDir(), "*.yaml").Order().Select(f => new object[] { Path.GetFileName(f) });

    [Theory]
    [MemberData(nameof(ShippedSpecs))]
    public void Every_shipped_spec_is_valid(string file)
    {
        var spec = SpecParser.Load(Path.Combine(SpecsDir(), file));
        Assert.Equal(Path.GetFileNameWithoutExtension(file), spec.Name);
    }

    [Fact]
    public void The_required_specs_are_shipped()
    {
        var names = Directory.GetFiles(SpecsDir(), "*.yaml").Select(Path.GetFileNameWithoutExtension).ToHashSet();
        foreach (var required in new[] { "teacher-mnist", "dafl-mnist", "dafl-mnist-quick", "deepinversion-mnist", "adi-mnist", "kd-mnist",
                     "lsr", "tfkd-self", "tfkd-reg", "rekd", "dekd", "dafl-fashion-mnist", "kd-fashion-mnist" })
            Assert.Contains(required, names);
    }

    private const string Valid = """
        name: t
        method: kd
        data: {name: mnist}
        teacher: {arch: lenet5, train: {epochs: 1}}
        student: {arch: lenet5-half, train: {epochs: 1}}
        kd: {temperature: 4, alpha: 0.1}
        """;

    /// <summary>The valid spec with one top-level section's line in its place.</summary>
    private static string WithLine(string section, string line) =>
        string.Join("\n", Valid.Split('\n').Select(l => l.StartsWith(section + ":") ? line : l));

    [Fact]
    public void A_valid_spec_gets_defaults()
    {
        var s = SpecParser.Parse(Valid, "v.yaml");
        Assert.Equal("kd", s.Method.Name);
        Assert.Equal(4, s.SettingsOf<KdSpec>().Temperature);
        Assert.Equal(256, s.Student.Train.BatchSize);
        Assert.Equal("cpu", s.Device);
    }

    [Theory]
    [InlineData("kd: {temperature: 4, alpha: 0.1, temprature: 3}", "kd.temprature", "unknown key")]
    [InlineData("kd: {temperature: hot, alpha: 0.1}", "kd.temperature", "expected a finite number")]
    [InlineData("kd: {temperature: -1, alpha: 0.1}", "kd.temperature", "out of range")]
    [InlineData("kd: {temperature: 4, alpha: 1.5}", "kd.alpha", "out of range")]
    [InlineData("kd: [1, 2]", "kd", "expected a section")]
    public void Bad_values_are_refused_with_file_key_and_reason(string kdLine, string key, string reason)
    {
        var text = Valid.Replace("kd: {temperature: 4, alpha: 0.1}", kdLine);
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(text, "my.yaml"));
        Assert.Equal(key, e.Key);
        Assert.StartsWith("my.yaml:", e.Message);
        Assert.Contains(reason, e.Message);
    }

    [Theory]
    [InlineData("teacher: {arch: lenet5, checkpoint: ''}", "teacher.checkpoint")]
    [InlineData("student: {arch: lenet5-half, checkpoint: '  ', train: {epochs: 1}}", "student.checkpoint")]
    public void An_empty_checkpoint_is_refused_by_its_key(string line, string key)
    {
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(WithLine(key.Split('.')[0], line), "e.yaml"));
        Assert.Equal(key, e.Key);
        Assert.Contains("is empty: give the weights file's path, or leave the key out", e.Message);
    }

    [Fact]
    public void A_teacher_loaded_from_a_checkpoint_and_given_a_training_length_is_refused()
    {
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(WithLine("teacher", "teacher: {arch: lenet5, checkpoint: t.pt, train: {epochs: 5}}"), "t.yaml"));
        Assert.Equal("teacher.train", e.Key);
        Assert.Contains("loaded from its checkpoint, not trained", e.Message);
        // a train block without a length trains nothing: accepted
        Assert.Equal("t.pt", SpecParser.Parse(WithLine("teacher", "teacher: {arch: lenet5, checkpoint: t.pt, train: {batch_size: 64}}"), "t.yaml").Teacher!.Checkpoint);
    }

    [Fact]
    public void A_checkpoint_path_that_begins_with_a_tilde_is_in_the_home_directory_as_a_shell_reads_it()
    {
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        Assert.False(string.IsNullOrEmpty(home));
        string? Read(string path) => SpecParser.Parse(WithLine("teacher", $"teacher: {{arch: lenet5, checkpoint: '{path}'}}"), "t.yaml").Teacher!.Checkpoint;
        Assert.Equal(Path.Combine(home, "models", "t.pth"), Read("~/models/t.pth"));
        // elsewhere a tilde is a character of the name
        Assert.Equal("models/~t.pth", Read("models/~t.pth"));
        Assert.Equal("~other/t.pth", Read("~other/t.pth"));
    }

    [Fact]
    public void A_layout_names_a_pool_per_kind_and_one_or_one_per_replica_for_the_students()
    {
        var s = SpecParser.Parse(Valid + "\ncluster: {replicas: 2, layout: {generator: west, student: [east, west]}}\n", "l.yaml");
        Assert.Equal("west", s.Cluster.Layout.PoolOf("generator", 0));
        Assert.Null(s.Cluster.Layout.PoolOf("teacher", 0));
        Assert.Equal("east", s.Cluster.Layout.PoolOf("student", 0));
        Assert.Equal("west", s.Cluster.Layout.PoolOf("student", 1));
        var one = SpecParser.Parse(Valid + "\ncluster: {replicas: 4, layout: {student: gpu-a}}\n", "l.yaml");
        Assert.Equal("gpu-a", one.Cluster.Layout.PoolOf("student", 2));
        // the student's batch splits over the replicas
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(Valid + "\ncluster: {replicas: 3}\n", "l.yaml"));
        Assert.Equal("cluster.replicas", e.Key);
        Assert.Contains("the batch of 256 does not split evenly over 3 replicas", e.Message);
    }

    [Theory]
    [InlineData("cluster: {replicas: 2, layout: {student: [a, b, c]}}", "cluster.layout.student", "3 pools for 2 replica(s)")]
    [InlineData("cluster: {layout: {generator: 'a b'}}", "cluster.layout.generator", "not a pool name")]
    [InlineData("cluster: {layout: {students: a}}", "cluster.layout.students", "unknown key")]
    public void A_bad_layout_is_refused_with_its_key(string line, string key, string reason)
    {
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(Valid + "\n" + line + "\n", "x.yaml"));
        Assert.Equal(key, e.Key);
        Assert.Contains(reason, e.Message);
    }

    /// <summary>Every key's problem is refused at once, in the file's order, as `validate` prints them: a user fixes them in one go.</summary>
    [Fact]
    public void Every_problem_of_a_spec_is_refused_together_in_the_files_order()
    {
        var text = """
            name: t
            method: kd
            data: {name: mnist}
            teacher: {arch: lenet5, train: {epochs: 1, lr: -1}}
            student: {arch: lenet5-half, train: {epochs: 1, lr: 0}}
            kd: {temperature: 4, alpha: 1.5}
            epochs: 3
            """;
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(text, "x.yaml"));
        Assert.Equal(["teacher.train.lr", "student.train.lr", "kd.alpha", "epochs"], e.All.Select(p => p.Key));
        Assert.Equal([4, 5, 6, 7], e.All.Select(p => p.Line));
        Assert.Equal("teacher.train.lr", e.Key);
        var lines = e.Message.Split('\n');
        Assert.Equal(4, lines.Length);
        Assert.StartsWith("x.yaml:4: 'teacher.train.lr': ", lines[0]);
        Assert.StartsWith("  x.yaml:6: 'kd.alpha': 1.5 is out of range", lines[2]);
        Assert.Equal("  x.yaml:7: 'epochs': unknown key", lines[3]);
        // one problem is one line, as before
        Assert.Single(Assert.Throws<SpecException>(() => SpecParser.Parse(Valid + "\nepochs: 3\n", "x.yaml")).All);
    }

    [Fact]
    public void Unknown_top_level_key_reports_its_line()
    {
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(Valid + "\nepochs: 3\n", "x.yaml"));
        Assert.Equal("epochs", e.Key);
        Assert.StartsWith("x.yaml:7:", e.Message);
    }

    [Theory]
    [InlineData("method: sgd-magic", "method", "is not one of")]
    [InlineData("seed: 1.5", "seed", "expected an integer")]
    [InlineData("device: tpu", "device", "is not one of")]
    public void Bad_top_level_values_are_refused(string line, string key, string reason)
    {
        var text = line.StartsWith("method") ? Valid.Replace("method: kd", line) : Valid + "\n" + line + "\n";
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(text, "x.yaml"));
        Assert.Equal(key, e.Key);
        Assert.Contains(reason, e.Message);
    }

    [Fact]
    public void The_pixel_range_clamp_is_off_unless_asked_for_and_must_be_a_boolean()
    {
        var dafl = Valid.Replace("method: kd", "method: dafl").Replace("kd: {temperature: 4, alpha: 0.1}", "dafl: {steps: 10}");
        Assert.False(SpecParser.Parse(dafl, "x.yaml").SettingsOf<DaflSpec>().ClampToPixelRange);
        Assert.True(SpecParser.Parse(dafl.Replace("{steps: 10}", "{steps: 10, clamp_to_pixel_range: true}"), "x.yaml").SettingsOf<DaflSpec>().ClampToPixelRange);
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(dafl.Replace("{steps: 10}", "{steps: 10, clamp_to_pixel_range: sometimes}"), "x.yaml"));
        Assert.Equal("dafl.clamp_to_pixel_range", e.Key);
        Assert.True(SpecParser.Load(Path.Combine(SpecsDir(), "dafl-mnist-quick.yaml")).SettingsOf<DaflSpec>().ClampToPixelRange, "the quick spec clamps (docs/results.md)");
        Assert.False(SpecParser.Load(Path.Combine(SpecsDir(), "dafl-mnist.yaml")).SettingsOf<DaflSpec>().ClampToPixelRange, "the paper spec runs the generator as coded");
    }

    [Fact]
    public void The_baseline_has_its_own_train_block_only_with_compare_baseline()
    {
        var own = SpecParser.Parse(Valid + "\ncompare_baseline: true\nbaseline_train: {epochs: 60, optimizer: sgd, lr: 0.05}\n", "x.yaml");
        Assert.Equal(60, own.BaselineTrain!.Epochs);
        Assert.Equal(0.05, own.BaselineTrain.Lr);
        Assert.Equal(new TrainSpec().BatchSize, own.BaselineTrain.BatchSize); // a whole block: nothing is taken from student.train
        Assert.Null(SpecParser.Parse(Valid + "\ncompare_baseline: true\n", "x.yaml").BaselineTrain);
        Assert.Equal(own.BaselineTrain, SpecParser.Parse(SpecParser.Write(own), "x.yaml").BaselineTrain);

        // the student alone as a spec of its own (what the actors run as <run-id>-baseline): it writes and parses back
        var b = SpecParser.Parse(SpecParser.Write(own.Baseline()), "x.yaml");
        Assert.Equal(("supervised", own.Seed + 1, own.Student.Arch, false, false), (b.Method.Name, b.Seed, b.Student.Arch, b.CompareBaseline, b.Guard.Enabled));
        Assert.Equal(own.BaselineTrain, b.Student.Train);
        Assert.Null(b.Teacher);
        Assert.Equal(own.Student.Train, SpecParser.Parse(Valid + "\ncompare_baseline: true\n", "x.yaml").Baseline().Student.Train);
        foreach (var file in Directory.GetFiles(SpecsDir(), "*.yaml").Select(SpecParser.Load).Where(x => x.CompareBaseline))
            Assert.Equal("supervised", SpecParser.Parse(SpecParser.Write(file.Baseline()), "x.yaml").Method.Name);

        var alone = Assert.Throws<SpecException>(() => SpecParser.Parse(Valid + "\nbaseline_train: {epochs: 3}\n", "x.yaml"));
        Assert.Equal("baseline_train", alone.Key);
        Assert.Contains("compare_baseline: true", alone.Message);
        var empty = Assert.Throws<SpecException>(() => SpecParser.Parse(Valid + "\ncompare_baseline: true\nbaseline_train: {lr: 0.05}\n", "x.yaml"));
        Assert.Contains("give epochs or steps", empty.Message);
        var typo = Assert.Throws<SpecException>(() => SpecParser.Parse(Valid + "\ncompare_baseline: true\nbaseline_train: {epochs: 3, lrate: 0.05}\n", "x.yaml"));
        Assert.Equal("baseline_train.lrate", typo.Key);
    }

    [Fact]
    public void A_section_for_another_method_is_refused()
    {
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(Valid + "\ndafl: {steps: 10}\n", "x.yaml"));
        Assert.Equal("dafl", e.Key);
        Assert.Contains("does not apply to method 'kd'", e.Message);
    }

    [Fact]
    public void Missing_teacher_for_a_distillation_method_is_refused()
    {
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(Valid.Replace("teacher: {arch: lenet5, train: {epochs: 1}}\n", ""), "x.yaml"));
        Assert.Equal("teacher", e.Key);
    }

    [Fact]
    public void Deepinversion_needs_a_batchnorm_teacher()
    {
        const string di = """
            name: d
            method: deepinversion
            data: {name: mnist}
            teacher: {arch: lenet5, train: {epochs: 1}}
            student: {arch: lenet5-half}
            """;
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(di, "d.yaml"));
        Assert.Equal("teacher.arch", e.Key);
        Assert.Contains("BatchNorm", e.Message);
        // every architecture with BatchNorm layers is a DeepInversion and ADI teacher (ModelTests checks the layers are there)
        foreach (var arch in Distill.Engine.Models.ModelFactory.Architectures)
            foreach (var method in new[] { "deepinversion", "adi" })
            {
                var yaml = di.Replace("method: deepinversion", $"method: {method}").Replace("arch: lenet5, train", $"arch: {arch}, train").Replace("{name: mnist}", "{name: cifar10, path: cifar}");
                if (Distill.Engine.Models.ModelFactory.HasBatchNorm(arch)) Assert.Equal(arch, SpecParser.Parse(yaml, "d.yaml").Teacher!.Arch);
                else Assert.Equal("teacher.arch", Assert.Throws<SpecException>(() => SpecParser.Parse(yaml, "d.yaml")).Key);
            }
    }

    [Fact]
    public void Broken_yaml_is_refused_with_a_line()
    {
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse("name: x\nmethod: [kd\n", "b.yaml"));
        Assert.Contains("not valid YAML", e.Message);
        // a flow mapping left open before the next key (YamlDotNet throws no YamlException for it): a run spec, a sweep spec, and validate
        const string open = "name: x\nmethod: kd\ndata: {name: mnist\nstudent: {arch: lenet5-half, train: {steps: 3}}\n";
        Assert.Contains("is not closed before the next key", Assert.Throws<SpecException>(() => SpecParser.Parse(open, "b.yaml")).Message);
        Assert.Contains("not valid YAML", Assert.Throws<SpecException>(() => Distill.Engine.Sweeps.SweepParser.Parse("base: k.yaml\nspace:\n  kd.temperature: {grid: [1, 4\nsearch: {kind: grid}\n", "s.yaml")).Message);
        Assert.False(Distill.Engine.Sweeps.SweepParser.IsSweep(open));
        var file = Path.Combine(Path.GetTempPath(), $"cd-open-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(file, open);
        try
        {
            var err = new StringWriter();
            Assert.Equal(2, global::Cluster.Seed.Commands.CommandLine.Dispatch(["validate", file], TextWriter.Null, err));
            Assert.Contains("not valid YAML", err.ToString());
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public void A_sweep_spec_given_as_a_run_spec_and_the_reverse_are_named_so()
    {
        var sweep = Path.Combine(SpecsDir(), "sweeps", "kd-mnist-grid-asha.yaml");
        Assert.Contains("a sweep spec (it has space: or base:), not a run spec: run it with `Cluster.Seed sweep`", Assert.Throws<SpecException>(() => SpecParser.Load(sweep)).Message);
        Assert.Contains("a run spec (it has method: and no space: or base:), not a sweep spec: run it with `Cluster.Seed run`",
            Assert.Throws<SpecException>(() => Distill.Engine.Sweeps.SweepParser.Load(Path.Combine(SpecsDir(), "kd-mnist.yaml"))).Message);
    }

    [Fact]
    public void Cifar_needs_a_path()
    {
        var e = Assert.Throws<SpecException>(() => SpecParser.Parse(Valid.Replace("data: {name: mnist}", "data: {name: cifar10}")
            .Replace("lenet5-half", "resnet8").Replace("arch: lenet5,", "arch: resnet20,"), "c.yaml"));
        Assert.Equal("data.path", e.Key);
    }
}
