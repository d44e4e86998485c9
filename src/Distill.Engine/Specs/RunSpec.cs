using Distill.Engine.Methods;
using Distill.Engine.Models;

namespace Distill.Engine.Specs;

/// <summary>
/// A run spec as read from YAML. Every key is declared once, on the property that holds it
/// (<see cref="SpecKeyAttribute"/>: default, range, description); the method's own section is
/// declared in the method's file and held in <see cref="Settings"/>.
/// </summary>
public sealed record RunSpec
{
    [SpecKey("the run's name; run ids start with it", Required = true)]
    public string Name { get; init; } = "";
    /// <summary>The spec's `method:`, from <see cref="MethodRegistry"/>.</summary>
    public MethodDefinition Method { get; init; } = null!;
    [SpecKey("seeds the models' initial weights, the batch order and every generator", Min = 0)]
    public int Seed { get; init; } = 1;
    [SpecKey("where the tensors live (auto: CUDA when present)", Choices = ["cpu", "cuda", "auto"])]
    public string Device { get; init; } = "cpu";
    [SpecKey("CPU threads of libtorch (0: its default)", Min = 0, Max = 1024)]
    public int Threads { get; init; }
    [SpecKey("also train the student alone (method supervised, seed + 1, baseline_train) and report it in result.json as baseline_*; through the actors it is the run <run-id>-baseline (a sweep's trials skip it)")]
    public bool CompareBaseline { get; init; }
    [SpecKey("how compare_baseline's student alone is trained, a whole train block (absent: as student.train); a student that sees no teacher can often take a larger learning rate than a distilled one")]
    public TrainSpec? BaselineTrain { get; init; }
    [SpecKey("the dataset", Required = true)]
    public DataSpec Data { get; init; } = new();
    /// <summary>Read by the parser as the method says (<see cref="TeacherUse"/>).</summary>
    public ModelSpec? Teacher { get; init; }
    [SpecKey("the student: architecture and training", Required = true)]
    public ModelSpec Student { get; init; } = new();
    /// <summary>The method's section (<see cref="MethodDefinition.Section"/>); null for a method without one.</summary>
    public object? Settings { get; init; }
    [SpecKey("the divergence guard (rollback to a good state with lower learning rates)")]
    public GuardSpec Guard { get; init; } = new();
    [SpecKey("how the actor pipeline runs the method (ignored by the engine-only loop)")]
    public ClusterSpec Cluster { get; init; } = new();
    [YamlDotNet.Serialization.YamlIgnore] public string SourceFile { get; init; } = "";
    [YamlDotNet.Serialization.YamlIgnore] public string SourceText { get; init; } = "";

    /// <summary>
    /// compare_baseline's student alone, as a spec of its own: the student's architecture from fresh
    /// weights, trained with cross-entropy (`method: supervised`) on baseline_train (absent:
    /// student.train), seed + 1, without the guard. The engine loop trains it before the student;
    /// the actors run it as a run of its own (<see cref="Runs.RunIds.Baseline"/>).
    /// </summary>
    public RunSpec Baseline() => this with
    {
        Name = Name + "-baseline",
        Method = MethodRegistry.Get("supervised"),
        Seed = Seed + 1,
        CompareBaseline = false,
        BaselineTrain = null,
        Teacher = null,
        Settings = null,
        Student = Student with { Checkpoint = null, CheckpointKey = null, KeyMap = [], Train = BaselineTrain ?? Student.Train },
        Guard = Guard with { Enabled = false },
    };

    /// <summary>The method's section as its record type.</summary>
    public T SettingsOf<T>() where T : class =>
        Settings as T ?? throw new InvalidOperationException($"method '{Method.Name}' has no {typeof(T).Name} section");
}

public sealed record DataSpec : ISpecChecked
{
    [SpecKey("dataset", Required = true, Choices = ["mnist", "fashion-mnist", "cifar10", "cifar100", "idx"])]
    public string Name { get; init; } = "";
    [SpecKey("folder of local files (required for cifar10, cifar100 and idx)")]
    public string? Path { get; init; }
    [SpecKey("images are resized to this square size", Min = 8, Max = 512)]
    public int ImageSize { get; init; } = 32;
    [SpecKey("training-set augmentation: crop-flip pads 4 black pixels, crops back at random and mirrors half the images (the CIFAR repositories' RandomCrop(32, padding=4) + RandomHorizontalFlip); jitter shifts each image by up to jitter_pixels in each direction (Hinton et al.'s MNIST teacher); auto: crop-flip for cifar10 and cifar100", Choices = ["auto", "none", "crop-flip", "jitter"])]
    public string Augment { get; init; } = "auto";
    [SpecKey("largest shift of augment: jitter, in pixels", Min = 1, Max = 8)]
    public int JitterPixels { get; init; } = 2;
    [SpecKey("hold out the last N training images (after train_limit) as a validation split: evaluations during the run, the guard, the best checkpoint and sweeps choose on it, and the test set is evaluated once, at the end (0: no split; evaluations use the test set)", Min = 0)]
    public int Validation { get; init; }
    [SpecKey("use only the first N training images (0: all)", Min = 0)]
    public int TrainLimit { get; init; }
    // 1000 through ResNet-20 on CPU peaked at 4.7 GB RSS, 100 at 1.9 GB
    [SpecKey("test-set batch size of the evaluations", Min = 1, Max = 100_000)]
    public int EvalBatch { get; init; } = 200;

    public IEnumerable<(string Key, string Reason)> Problems()
    {
        if (Name is "cifar10" or "cifar100" or "idx" && Path is null)
            yield return ("path", $"dataset '{Name}' is read from local files: give their folder");
        if (Validation > 0 && TrainLimit > 0 && Validation >= TrainLimit)
            yield return ("validation", $"holds out {Validation} images but train_limit leaves only {TrainLimit}: no training image would remain");
    }
}

public sealed record ModelSpec
{
    [SpecKey("architecture", Required = true, ChoicesFrom = typeof(ModelFactory), ChoicesMember = nameof(ModelFactory.Architectures))]
    public string Arch { get; init; } = "";
    [SpecKey("weights to start from (a teacher: instead of training it): a PyTorch state_dict or checkpoint (zip or legacy torch.save), safetensors, or ClusterDistill's own format, told apart by content; a leading ~/ is the home directory, as a shell reads it")]
    public string? Checkpoint { get => checkpoint; init => checkpoint = HomePath(value); }
    private readonly string? checkpoint;

    /// <summary>"~/x" as a shell reads it (the spec's YAML is not read by one); any other path as it is.</summary>
    private static string? HomePath(string? path) =>
        path is not null && (path == "~" || path.StartsWith("~/", StringComparison.Ordinal))
            ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), path.Length > 2 ? path[2..] : "")
            : path;
    [SpecKey("the key of a checkpoint dict that holds the weights (default: the first of state_dict, model, net, model_state_dict, student, teacher that does), or a path of keys into nested dicts (state_dict.model); for safetensors, a name prefix")]
    public string? CheckpointKey { get; init; }
    [SpecKey("prefixes of the checkpoint's names to rename, first match wins, e.g. {\"backbone.\": \"\", \"head.\": \"linear.\"} (a DataParallel 'module.' prefix is removed without one)")]
    public KeyValuePair<string, string>[] KeyMap { get; init; } = [];
    [SpecKey("how it is trained")]
    public TrainSpec Train { get; init; } = new();
}

public sealed record TrainSpec : ISpecChecked
{
    [SpecKey("epochs over the training set (or give steps)", Min = 0, Max = 100_000)]
    public int Epochs { get; init; }
    [SpecKey("optimiser steps (or give epochs)", Min = 0)]
    public int Steps { get; init; }
    [SpecKey("batch size", Min = 1, Max = 1 << 20)]
    public int BatchSize { get; init; } = 256;
    [SpecKey("optimiser", Choices = ["adam", "sgd"])]
    public string Optimizer { get; init; } = "adam";
    [SpecKey("learning rate", Min = 0, Max = 100, MinExclusive = true)]
    public double Lr { get; init; } = 1e-3;
    [SpecKey("SGD momentum", Min = 0, Max = 1)]
    public double Momentum { get; init; } = 0.9;
    [SpecKey("weight decay", Min = 0, Max = 1)]
    public double WeightDecay { get; init; }
    [SpecKey("after every step, each unit's incoming weight vector is scaled back to this L2 norm where it is longer (Hinton et al. 2012's constraint; 0: off)", Min = 0, Max = 1e6)]
    public double MaxNorm { get; init; }
    [SpecKey("learning-rate schedule", Choices = ["constant", "cosine", "step"])]
    public string Schedule { get; init; } = "constant";
    [SpecKey("steps at which schedule 'step' multiplies the rate by gamma")]
    public int[] Milestones { get; init; } = [];
    [SpecKey("factor of schedule 'step'", Min = 0, Max = 1, MinExclusive = true)]
    public double Gamma { get; init; } = 0.1;
    [SpecKey("steps between evaluations (on data.validation's split where there is one, else the test set; 0: only at the end)", Min = 0)]
    public int EvalEvery { get; init; }
    [SpecKey("this model's own training-set augmentation, in place of data.augment (as data.augment: auto, none, crop-flip or jitter)", Choices = ["auto", "none", "crop-flip", "jitter"])]
    public string? Augment { get; init; }

    public IEnumerable<(string Key, string Reason)> Problems()
    {
        if (Epochs > 0 && Steps > 0) yield return ("steps", "give epochs or steps, not both");
        if (Schedule == "step" && Milestones.Length == 0) yield return ("milestones", "schedule 'step' needs milestones (steps at which lr is multiplied by gamma)");
    }

    /// <summary>Whether the training has a length (epochs or steps).</summary>
    public bool HasLength => Epochs > 0 || Steps > 0;
}

public sealed record GuardSpec
{
    [SpecKey("roll back when a run goes bad")]
    public bool Enabled { get; init; } = true;
    [SpecKey("steps between health checks (and good-state saves); a generator's batches between checks of its own metrics", Min = 1)]
    public int CheckEvery { get; init; } = 50;
    [SpecKey("fewer distinct teacher labels in a generated batch is a collapse (the generator goes back)", Min = 1, Max = 100_000)]
    public int MinClasses { get; init; } = 3;
    [SpecKey("a student loss below this on generated data is a collapse", Min = 0, Max = 1e6)]
    public double MinLoss { get; init; } = 1e-6;
    [SpecKey("points below the best evaluation that count as divergence", Min = 0, Max = 100)]
    public double MaxAccuracyDrop { get; init; } = 5;
    [SpecKey("learning rates in force are multiplied by this on each rollback (two rollbacks: a quarter)", Min = 0, Max = 1, MinExclusive = true, MaxExclusive = true)]
    public double LrFactor { get; init; } = 0.5;
    [SpecKey("rollbacks before the run fails", Min = 0, Max = 1000)]
    public int MaxRollbacks { get; init; } = 5;
}

/// <summary>How the actor pipeline runs the method (ignored by the engine-only loop).</summary>
public sealed record ClusterSpec : ISpecChecked
{
    [SpecKey("data-parallel replicas of the student (gradients all-reduced)", Min = 1, Max = 64)]
    public int Replicas { get; init; } = 1;
    [SpecKey("batches a student may have requested and not yet trained (backpressure)", Min = 1, Max = 64)]
    public int Window { get; init; } = 2;
    [SpecKey("student checkpoint interval in steps (0: the evaluation interval)", Min = 0)]
    public int CheckpointEvery { get; init; }
    [SpecKey("generator checkpoint interval (0: the student's)", Min = 0)]
    public int GeneratorCheckpointEvery { get; init; }
    [SpecKey("memory for batches the source can make again, kept there until released instead of written to disk (0: every batch is written before it is sent)", Min = 0, Max = 1 << 20)]
    public int BatchMemoryMb { get; init; } = 256;
    [SpecKey("soft labels' type on the wire", Choices = ["fp32", "fp16", "bf16"])]
    public string SoftLabels { get; init; } = "fp32";
    [SpecKey("floats per gradient message (1 MiB: heartbeats are not stuck behind it)", Min = 1024, Max = 1 << 22)]
    public int GradientChunk { get; init; } = 1 << 18;
    [SpecKey("node pools that host the run's entities")]
    public LayoutSpec Layout { get; init; } = new();

    public IEnumerable<(string Key, string Reason)> Problems()
    {
        if (Layout.Student.Length > 1 && Layout.Student.Length != Replicas)
            yield return ("layout.student", $"{Layout.Student.Length} pools for {Replicas} replica(s): give one pool for all, or one per replica");
    }
}

/// <summary>
/// Which node pool (`Cluster.GpuNode join --pool NAME`) hosts each of the run's entities: a
/// preference the shard allocation follows whenever a node of the pool is up (and returns to when
/// one comes back); with none up the entity runs elsewhere rather than stall. Unset = any node.
/// </summary>
public sealed record LayoutSpec
{
    [SpecKey("pool of the generator", Pool = true)]
    public string? Generator { get; init; }
    [SpecKey("pool of the teacher", Pool = true)]
    public string? Teacher { get; init; }
    [SpecKey("one pool for every student replica, or one per replica", Pool = true)]
    public string[] Student { get; init; } = [];

    /// <summary>The pool of an entity kind ("generator", "teacher", "student") and index; null = anywhere.</summary>
    public string? PoolOf(string kind, int index) => kind switch
    {
        "generator" => Generator,
        "teacher" => Teacher,
        "student" => Student.Length == 0 ? null : Student[index % Student.Length],
        _ => null,
    };

    public static bool IsValidPool(string name) =>
        name.Length is > 0 and <= 63 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');
}
