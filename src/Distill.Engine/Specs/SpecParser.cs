using System.Globalization;
using Distill.Engine.Models;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Distill.Engine.Specs;

/// <summary>
/// Reads a YAML run spec strictly: every key must be known, every value of the right type and in
/// range, every method given the sections it needs and none it would ignore. Errors name the
/// file, line, key and reason.
/// </summary>
public static class SpecParser
{
    private static readonly Dictionary<string, Method> Methods = new()
    {
        ["supervised"] = Method.Supervised, ["kd"] = Method.Kd, ["lsr"] = Method.Lsr, ["tfkd-self"] = Method.TfKdSelf,
        ["tfkd-reg"] = Method.TfKdReg, ["dafl"] = Method.Dafl, ["deepinversion"] = Method.DeepInversion, ["adi"] = Method.Adi,
    };

    public static string MethodName(Method m) => Methods.First(kv => kv.Value == m).Key;

    public static RunSpec Load(string path)
    {
        if (!File.Exists(path)) throw new SpecException(path, "", "file not found");
        return Parse(File.ReadAllText(path), path);
    }

    public static RunSpec Parse(string text, string file = "<spec>")
    {
        var stream = new YamlStream();
        try { stream.Load(new StringReader(text)); }
        catch (YamlException e) { throw new SpecException(file, "", $"not valid YAML: {e.Message}", (int)e.Start.Line); }
        if (stream.Documents.Count != 1 || stream.Documents[0].RootNode is not YamlMappingNode rootMap)
            throw new SpecException(file, "", "a run spec is one YAML mapping (key: value lines)");
        var root = new Node(file, "", rootMap);

        var methodName = root.Choice("method", Methods.Keys.ToArray(), null)!;
        var method = Methods[methodName];
        var spec = new RunSpec
        {
            Name = root.String("name", null)!,
            Method = method,
            Seed = root.Int("seed", 1, 0, int.MaxValue),
            Device = root.Choice("device", ["cpu", "cuda", "auto"], "cpu")!,
            Threads = root.Int("threads", 0, 0, 1024),
            CompareBaseline = root.Bool("compare_baseline", false),
            Data = ParseData(root.Section("data", required: true)!),
            Teacher = ParseModel(root.Section("teacher", required: NeedsTeacher(method)), "teacher"),
            Student = ParseModel(root.Section("student", required: true), "student")!,
            Kd = method is Method.Kd or Method.TfKdSelf ? ParseKd(root.Section("kd", required: false)) : null,
            Lsr = method == Method.Lsr ? ParseLsr(root.Section("lsr", required: false)) : null,
            TfKdReg = method == Method.TfKdReg ? ParseTfKdReg(root.Section("tfkd_reg", required: false)) : null,
            Dafl = method == Method.Dafl ? ParseDafl(root.Section("dafl", required: false)) : null,
            DeepInversion = method is Method.DeepInversion or Method.Adi ? ParseDi(root.Section("deepinversion", required: false), method) : null,
            Guard = ParseGuard(root.Section("guard", required: false)),
            Cluster = ParseCluster(root.Section("cluster", required: false)),
            SourceFile = file,
            SourceText = text,
        };
        if (!NeedsTeacher(method) && method != Method.TfKdSelf && rootMap.Children.ContainsKey(new YamlScalarNode("teacher")))
            throw new SpecException(file, "teacher", $"method '{methodName}' uses no teacher; remove the section");
        if (method == Method.TfKdSelf && spec.Teacher is not null && spec.Teacher.Arch != spec.Student.Arch)
            throw new SpecException(file, "teacher.arch", "tfkd-self: the teacher is the student's own architecture trained normally; leave teacher out or use the same arch");
        foreach (var section in new[] { "kd", "lsr", "tfkd_reg", "dafl", "deepinversion" })
            if (!root.Consumed(section) && rootMap.Children.ContainsKey(new YamlScalarNode(section)))
                throw new SpecException(file, section, $"section does not apply to method '{methodName}'");
        if (method is Method.Supervised or Method.Lsr or Method.TfKdReg or Method.Kd or Method.TfKdSelf && spec.Student.Train.Epochs == 0 && spec.Student.Train.Steps == 0)
            throw new SpecException(file, "student.train", "give epochs or steps for the student's training");
        if (spec.Teacher is { Checkpoint: null } t && t.Train.Epochs == 0 && t.Train.Steps == 0 && NeedsTeacher(method))
            throw new SpecException(file, "teacher.train", "give a checkpoint, or epochs or steps to train the teacher");
        if (spec.Data.Name is "cifar10" or "cifar100" or "idx" && spec.Data.Path is null)
            throw new SpecException(file, "data.path", $"dataset '{spec.Data.Name}' is read from local files: give their folder");
        if (spec.Teacher?.Arch.StartsWith("lenet5") == true && spec.Data.ImageSize != 32 || spec.Student.Arch.StartsWith("lenet5") && spec.Data.ImageSize != 32)
            throw new SpecException(file, "data.image_size", "LeNet-5 needs 32x32 inputs (image_size: 32)");
        if (method is Method.DeepInversion or Method.Adi && spec.Teacher is { } dt && !dt.Arch.StartsWith("resnet"))
            throw new SpecException(file, "teacher.arch", $"DeepInversion needs a teacher with BatchNorm layers (resnet8/20/18/34), not '{dt.Arch}'");
        if (spec.Dafl is { } df && df.BatchSize % spec.Cluster.Replicas != 0)
            throw new SpecException(file, "cluster.replicas", $"the batch of {df.BatchSize} does not split evenly over {spec.Cluster.Replicas} replicas");
        root.EnsureAllConsumed();
        return spec;
    }

    public static bool NeedsTeacher(Method m) => m is Method.Kd or Method.Dafl or Method.DeepInversion or Method.Adi;

    private static DataSpec ParseData(Node n)
    {
        var d = new DataSpec
        {
            Name = n.Choice("name", ["mnist", "fashion-mnist", "cifar10", "cifar100", "idx"], null)!,
            Path = n.String("path", null, required: false),
            ImageSize = n.Int("image_size", 32, 8, 512),
            TrainLimit = n.Int("train_limit", 0, 0, int.MaxValue),
            EvalBatch = n.Int("eval_batch", 200, 1, 100_000),
        };
        n.EnsureAllConsumed();
        return d;
    }

    private static ModelSpec? ParseModel(Node? n, string role)
    {
        if (n is null) return null;
        var m = new ModelSpec
        {
            Arch = n.Choice("arch", ModelFactory.Architectures.ToArray(), null)!,
            Checkpoint = n.String("checkpoint", null, required: false),
            Train = ParseTrain(n.Section("train", required: false)),
        };
        n.EnsureAllConsumed();
        return m;
    }

    private static TrainSpec ParseTrain(Node? n)
    {
        if (n is null) return new TrainSpec();
        var t = new TrainSpec
        {
            Epochs = n.Int("epochs", 0, 0, 100_000),
            Steps = n.Int("steps", 0, 0, int.MaxValue),
            BatchSize = n.Int("batch_size", 256, 1, 1 << 20),
            Optimizer = n.Choice("optimizer", ["adam", "sgd"], "adam")!,
            Lr = n.Double("lr", 1e-3, 0, 100, exclusiveMin: true),
            Momentum = n.Double("momentum", 0.9, 0, 1),
            WeightDecay = n.Double("weight_decay", 0, 0, 1),
            Schedule = n.Choice("schedule", ["constant", "cosine", "step"], "constant")!,
            Milestones = n.IntList("milestones"),
            Gamma = n.Double("gamma", 0.1, 0, 1, exclusiveMin: true),
            EvalEvery = n.Int("eval_every", 0, 0, int.MaxValue),
        };
        if (t.Epochs > 0 && t.Steps > 0) throw n.Error("steps", "give epochs or steps, not both");
        if (t.Schedule == "step" && t.Milestones.Length == 0) throw n.Error("milestones", "schedule 'step' needs milestones (steps at which lr is multiplied by gamma)");
        n.EnsureAllConsumed();
        return t;
    }

    private static KdSpec ParseKd(Node? n)
    {
        if (n is null) return new KdSpec();
        var k = new KdSpec { Temperature = n.Double("temperature", 4, 0, 1000, exclusiveMin: true), Alpha = n.Double("alpha", 0.1, 0, 1) };
        n.EnsureAllConsumed();
        return k;
    }

    private static LsrSpec ParseLsr(Node? n)
    {
        if (n is null) return new LsrSpec();
        var l = new LsrSpec { Epsilon = n.Double("epsilon", 0.1, 0, 1, exclusiveMax: true) };
        n.EnsureAllConsumed();
        return l;
    }

    private static TfKdRegSpec ParseTfKdReg(Node? n)
    {
        if (n is null) return new TfKdRegSpec();
        var r = new TfKdRegSpec
        {
            CorrectProbability = n.Double("correct_probability", 0.9, 0.1, 1, exclusiveMin: true),
            Temperature = n.Double("temperature", 20, 0, 1000, exclusiveMin: true),
            Alpha = n.Double("alpha", 0.1, 0, 1),
            Softening = n.Choice("softening", ["power", "code"], "power")!,
        };
        n.EnsureAllConsumed();
        return r;
    }

    private static DaflSpec ParseDafl(Node? n)
    {
        if (n is null) return new DaflSpec();
        var d = new DaflSpec
        {
            Steps = n.Int("steps", 24_000, 1, int.MaxValue),
            BatchSize = n.Int("batch_size", 512, 2, 1 << 16),
            LatentDim = n.Int("latent_dim", 100, 1, 1 << 16),
            GeneratorWidth = n.Int("generator_width", 128, 2, 4096),
            GeneratorLr = n.Double("generator_lr", 0.2, 0, 100, exclusiveMin: true),
            Alpha = n.Double("alpha", 0.1, 0, 1e6),
            Beta = n.Double("beta", 5, 0, 1e6),
            OneHotWeight = n.Double("one_hot_weight", 1, 0, 1e6),
            OneHot = n.Choice("one_hot", ["ce", "l1"], "ce")!,
            Activation = n.Choice("activation", ["paper", "code"], "paper")!,
            Entropy = n.Choice("entropy", ["paper", "code", "per-sample"], "paper")!,
            EvalEvery = n.Int("eval_every", 1000, 1, int.MaxValue),
            SampleGrid = n.Int("sample_grid", 64, 0, 1024),
            ClampToPixelRange = n.Bool("clamp_to_pixel_range", false),
        };
        if (d.GeneratorWidth % 2 != 0) throw n.Error("generator_width", "must be even (the second block has half the width)");
        n.EnsureAllConsumed();
        return d;
    }

    private static DeepInversionSpec ParseDi(Node? n, Method method)
    {
        var d = n is null ? new DeepInversionSpec() : new DeepInversionSpec
        {
            Rounds = n.Int("rounds", 10, 1, 1_000_000),
            BatchSize = n.Int("batch_size", 256, 1, 1 << 16),
            Iterations = n.Int("iterations", 2000, 1, 1_000_000),
            Lr = n.Double("lr", 0.1, 0, 100, exclusiveMin: true),
            TvWeight = n.Double("tv_weight", 1e-4, 0, 1e6),
            L2Weight = n.Double("l2_weight", 1e-5, 0, 1e6),
            FeatureWeight = n.Double("feature_weight", 10, 0, 1e6),
            FirstBnWeight = n.Double("first_bn_weight", 10, 0, 1e6),
            CompetitionWeight = n.Double("competition_weight", method == Method.Adi ? 1 : 0, 0, 1e6),
            Tv = n.Choice("tv", ["paper", "code"], "paper")!,
            Competition = n.Choice("competition", ["paper", "code"], "paper")!,
            Jitter = n.Int("jitter", 2, 0, 64),
            Flip = n.Bool("flip", true),
            StudentSteps = n.Int("student_steps", 200, 0, int.MaxValue),
            StudentBatch = n.Int("student_batch", 256, 1, 1 << 16),
            StudentTemperature = n.Double("student_temperature", 3, 0, 1000, exclusiveMin: true),
            SampleGrid = n.Int("sample_grid", 64, 0, 1024),
        };
        if (method == Method.DeepInversion && d.CompetitionWeight != 0)
            throw new SpecException(n!.File, "deepinversion.competition_weight", "the competition term is ADI's: use method 'adi'");
        if (method == Method.Adi && d.CompetitionWeight <= 0)
            throw new SpecException(n?.File ?? "", "deepinversion.competition_weight", "adi needs a competition weight > 0");
        n?.EnsureAllConsumed();
        return d;
    }

    private static ClusterSpec ParseCluster(Node? n)
    {
        if (n is null) return new ClusterSpec();
        var c = new ClusterSpec
        {
            Replicas = n.Int("replicas", 1, 1, 64),
            Window = n.Int("window", 2, 1, 64),
            CheckpointEvery = n.Int("checkpoint_every", 0, 0, int.MaxValue),
            GeneratorCheckpointEvery = n.Int("generator_checkpoint_every", 0, 0, int.MaxValue),
            SoftLabels = n.Choice("soft_labels", ["fp32", "fp16", "bf16"], "fp32")!,
            GradientChunk = n.Int("gradient_chunk", 1 << 18, 1024, 1 << 22),
        };
        c = c with { Layout = ParseLayout(n.Section("layout", required: false), c.Replicas) };
        n.EnsureAllConsumed();
        return c;
    }

    private static LayoutSpec ParseLayout(Node? n, int replicas)
    {
        if (n is null) return new LayoutSpec();
        var l = new LayoutSpec
        {
            Generator = n.Pool("generator"),
            Teacher = n.Pool("teacher"),
            Student = n.PoolList("student"),
        };
        if (l.Student.Length > 1 && l.Student.Length != replicas)
            throw n.Error("student", $"{l.Student.Length} pools for {replicas} replica(s): give one pool for all, or one per replica");
        n.EnsureAllConsumed();
        return l;
    }

    private static GuardSpec ParseGuard(Node? n)
    {
        if (n is null) return new GuardSpec();
        var g = new GuardSpec
        {
            Enabled = n.Bool("enabled", true),
            CheckEvery = n.Int("check_every", 50, 1, int.MaxValue),
            MinClasses = n.Int("min_classes", 3, 1, 100_000),
            MinLoss = n.Double("min_loss", 1e-6, 0, 1e6),
            MaxAccuracyDrop = n.Double("max_accuracy_drop", 5, 0, 100),
            LrFactor = n.Double("lr_factor", 0.5, 0, 1, exclusiveMin: true, exclusiveMax: true),
            MaxRollbacks = n.Int("max_rollbacks", 5, 0, 1000),
        };
        n.EnsureAllConsumed();
        return g;
    }

    /// <summary>A mapping node that remembers which keys were read, so that unknown ones are refused.</summary>
    private sealed class Node(string file, string prefix, YamlMappingNode map)
    {
        private readonly HashSet<string> consumed = [];
        public string File => file;

        public bool Consumed(string key) => consumed.Contains(key);

        private string Full(string key) => prefix.Length == 0 ? key : $"{prefix}.{key}";

        public SpecException Error(string key, string reason) =>
            new(file, Full(key), reason, Get(key, mark: false) is { } v ? (int)v.Start.Line : (int)map.Start.Line);

        private YamlNode? Get(string key, bool mark = true)
        {
            if (mark) consumed.Add(key);
            return map.Children.TryGetValue(new YamlScalarNode(key), out var v) ? v : null;
        }

        private string? Scalar(string key, bool required)
        {
            var v = Get(key);
            if (v is null)
            {
                if (required) throw new SpecException(file, Full(key), "required key is missing", (int)map.Start.Line);
                return null;
            }
            if (v is not YamlScalarNode s) throw new SpecException(file, Full(key), "expected a single value, found a list or mapping", (int)v.Start.Line);
            if (s.Style == YamlDotNet.Core.ScalarStyle.Plain && s.Value is "~" or "null" or "") return null;
            return s.Value;
        }

        public string? String(string key, string? dflt, bool required = true)
        {
            var v = Scalar(key, required && dflt is null);
            return v ?? dflt;
        }

        public string? Choice(string key, string[] allowed, string? dflt)
        {
            var v = Scalar(key, dflt is null);
            if (v is null) return dflt;
            if (!allowed.Contains(v)) throw Error(key, $"'{v}' is not one of: {string.Join(", ", allowed)}");
            return v;
        }

        public int Int(string key, int dflt, int min, int max)
        {
            var v = Scalar(key, false);
            if (v is null) return dflt;
            if (!int.TryParse(v.Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out var i))
                throw Error(key, $"expected an integer, got '{v}'");
            if (i < min || i > max) throw Error(key, $"{i} is out of range [{min}, {max}]");
            return i;
        }

        public double Double(string key, double dflt, double min, double max, bool exclusiveMin = false, bool exclusiveMax = false)
        {
            var v = Scalar(key, false);
            if (v is null) return dflt;
            if (!double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) || !double.IsFinite(d))
                throw Error(key, $"expected a finite number, got '{v}'");
            if (d < min || d > max || exclusiveMin && d == min || exclusiveMax && d == max)
                throw Error(key, $"{d} is out of range {(exclusiveMin ? "(" : "[")}{min}, {max}{(exclusiveMax ? ")" : "]")}");
            return d;
        }

        public bool Bool(string key, bool dflt)
        {
            var v = Scalar(key, false);
            return v switch
            {
                null => dflt,
                "true" or "yes" or "on" => true,
                "false" or "no" or "off" => false,
                _ => throw Error(key, $"expected true or false, got '{v}'"),
            };
        }

        /// <summary>A node pool name (what `Cluster.GpuNode join --pool` names).</summary>
        public string? Pool(string key)
        {
            var v = Scalar(key, false);
            if (v is not null && !LayoutSpec.IsValidPool(v)) throw Error(key, $"'{v}' is not a pool name (letters, digits, '-', '_', '.')");
            return v;
        }

        public string[] PoolList(string key)
        {
            var v = Get(key);
            if (v is null) return [];
            if (v is YamlScalarNode) return Pool(key) is { } one ? [one] : [];
            if (v is not YamlSequenceNode seq) throw Error(key, "expected a pool name or a list of them, one per replica");
            return seq.Children.Select(c => c is YamlScalarNode s && LayoutSpec.IsValidPool(s.Value ?? "")
                ? s.Value! : throw Error(key, $"'{c}' is not a pool name (letters, digits, '-', '_', '.')")).ToArray();
        }

        public int[] IntList(string key)
        {
            var v = Get(key);
            if (v is null) return [];
            if (v is not YamlSequenceNode seq) throw Error(key, "expected a list of integers, e.g. [1000, 2000]");
            return seq.Children.Select(c => c is YamlScalarNode s && int.TryParse(s.Value, out var i) && i >= 0
                ? i : throw Error(key, $"'{c}' is not a non-negative integer")).ToArray();
        }

        public Node? Section(string key, bool required)
        {
            var v = Get(key);
            if (v is null || v is YamlScalarNode { Value: "~" or "null" or "" })
            {
                if (required) throw new SpecException(file, Full(key), "required section is missing", (int)map.Start.Line);
                return null;
            }
            if (v is not YamlMappingNode m) throw new SpecException(file, Full(key), "expected a section (a mapping of keys)", (int)v.Start.Line);
            return new Node(file, Full(key), m);
        }

        public void EnsureAllConsumed()
        {
            foreach (var (k, v) in map.Children)
            {
                var key = (k as YamlScalarNode)?.Value ?? k.ToString();
                if (!consumed.Contains(key))
                    throw new SpecException(file, Full(key), $"unknown key", (int)k.Start.Line);
            }
        }
    }
}
