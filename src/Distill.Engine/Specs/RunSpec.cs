namespace Distill.Engine.Specs;

/// <summary>The methods a run can use (SPEC.md). The spec's `method:` value is in brackets.</summary>
public enum Method
{
    Supervised,      // [supervised] train one model on labelled data
    Kd,              // [kd] Hinton KD on real data (also Re-KD and De-KD: the spec picks the models)
    Lsr,             // [lsr] label smoothing
    TfKdSelf,        // [tfkd-self] the student architecture, trained normally, teaches a fresh copy
    TfKdReg,         // [tfkd-reg] virtual teacher
    Dafl,            // [dafl]
    DeepInversion,   // [deepinversion]
    Adi,             // [adi] adaptive DeepInversion
}

public sealed record RunSpec
{
    public required string Name { get; init; }
    public required Method Method { get; init; }
    public int Seed { get; init; } = 1;
    public string Device { get; init; } = "cpu";       // cpu | cuda | auto
    public int Threads { get; init; }                 // 0 = TorchSharp's default
    public required DataSpec Data { get; init; }
    public ModelSpec? Teacher { get; init; }
    public required ModelSpec Student { get; init; }
    public KdSpec? Kd { get; init; }
    public LsrSpec? Lsr { get; init; }
    public TfKdRegSpec? TfKdReg { get; init; }
    public DaflSpec? Dafl { get; init; }
    public DeepInversionSpec? DeepInversion { get; init; }
    public GuardSpec Guard { get; init; } = new();
    public ClusterSpec Cluster { get; init; } = new();
    public bool CompareBaseline { get; init; }        // also train the student alone and report it
    [YamlDotNet.Serialization.YamlIgnore] public string SourceFile { get; init; } = "";
    [YamlDotNet.Serialization.YamlIgnore] public string SourceText { get; init; } = "";
}

public sealed record DataSpec
{
    public required string Name { get; init; }        // mnist | fashion-mnist | cifar10 | cifar100 | idx
    public string? Path { get; init; }                // folder of local files (required for cifar*, idx)
    public int ImageSize { get; init; } = 32;
    public int TrainLimit { get; init; }              // 0 = all
    public int EvalBatch { get; init; } = 200;        // test-set batch: 1000 through ResNet-20 on CPU peaked at 4.7 GB RSS, 100 at 1.9 GB
}

public sealed record ModelSpec
{
    public required string Arch { get; init; }
    public string? Checkpoint { get; init; }          // load instead of training
    public TrainSpec Train { get; init; } = new();
}

public sealed record TrainSpec
{
    public int Epochs { get; init; }                  // either epochs or steps
    public int Steps { get; init; }
    public int BatchSize { get; init; } = 256;
    public string Optimizer { get; init; } = "adam";  // adam | sgd
    public double Lr { get; init; } = 1e-3;
    public double Momentum { get; init; } = 0.9;
    public double WeightDecay { get; init; }
    public string Schedule { get; init; } = "constant"; // constant | cosine | step
    public int[] Milestones { get; init; } = [];      // for step, in steps
    public double Gamma { get; init; } = 0.1;
    public int EvalEvery { get; init; }               // 0 = only at the end
}

public sealed record KdSpec
{
    public double Temperature { get; init; } = 4;
    public double Alpha { get; init; } = 0.1;
}

public sealed record LsrSpec
{
    public double Epsilon { get; init; } = 0.1;
}

public sealed record TfKdRegSpec
{
    public double CorrectProbability { get; init; } = 0.9;
    public double Temperature { get; init; } = 20;
    public double Alpha { get; init; } = 0.1;
    public string Softening { get; init; } = "power"; // power | code
}

public sealed record DaflSpec
{
    public int Steps { get; init; } = 24_000;
    public int BatchSize { get; init; } = 512;
    public int LatentDim { get; init; } = 100;
    public int GeneratorWidth { get; init; } = 128;
    public double GeneratorLr { get; init; } = 0.2;
    public double Alpha { get; init; } = 0.1;         // activation loss weight
    public double Beta { get; init; } = 5;            // information entropy weight
    public double OneHotWeight { get; init; } = 1;
    public string OneHot { get; init; } = "ce";       // ce | l1
    public string Activation { get; init; } = "paper"; // paper | code
    public string Entropy { get; init; } = "paper";   // paper | code | per-sample
    public int EvalEvery { get; init; } = 1000;
    public int SampleGrid { get; init; } = 64;        // images in the PNG per evaluation
    /// <summary>
    /// Clamp the generator's output to the values real pixels in [0, 1] take after normalisation
    /// (the official generator ends in BatchNorm, whose output is unbounded). Off: as coded.
    /// </summary>
    public bool ClampToPixelRange { get; init; }
}

public sealed record DeepInversionSpec
{
    public int Rounds { get; init; } = 10;            // synthesis rounds
    public int BatchSize { get; init; } = 256;        // images per synthesised batch
    public int Iterations { get; init; } = 2000;      // pixel optimisation steps per batch
    public double Lr { get; init; } = 0.1;
    public double TvWeight { get; init; } = 1e-4;     // a_tv
    public double L2Weight { get; init; } = 1e-5;     // a_l2
    public double FeatureWeight { get; init; } = 10;  // a_f
    public double FirstBnWeight { get; init; } = 10;
    public double CompetitionWeight { get; init; }    // ADI's R_compete weight (adi only)
    public string Tv { get; init; } = "paper";        // paper | code
    public string Competition { get; init; } = "paper"; // paper | code
    public int Jitter { get; init; } = 2;             // max roll in pixels
    public bool Flip { get; init; } = true;
    public int StudentSteps { get; init; } = 200;     // student KD steps after each round
    public int StudentBatch { get; init; } = 256;
    public double StudentTemperature { get; init; } = 3;
    public int SampleGrid { get; init; } = 64;
}

public sealed record GuardSpec
{
    public bool Enabled { get; init; } = true;
    public int CheckEvery { get; init; } = 50;        // steps between health checks (and good-state saves)
    public int MinClasses { get; init; } = 3;         // fewer distinct teacher labels in a batch = collapse
    public double MinLoss { get; init; } = 1e-6;      // student loss below this on generated data = collapse
    public double MaxAccuracyDrop { get; init; } = 5; // points below the best evaluation = divergence
    public double LrFactor { get; init; } = 0.5;      // learning rates are multiplied by this on rollback
    public int MaxRollbacks { get; init; } = 5;
}

/// <summary>How the actor pipeline runs the method (ignored by the engine-only loop).</summary>
public sealed record ClusterSpec
{
    public int Replicas { get; init; } = 1;           // data-parallel replicas of the student (gradients all-reduced)
    public int Window { get; init; } = 2;             // batches a student may have requested and not yet trained (backpressure)
    public int CheckpointEvery { get; init; }         // student checkpoint interval in steps (0 = the evaluation interval)
    public int GeneratorCheckpointEvery { get; init; } // generator checkpoint interval (0 = the student's)
    public string SoftLabels { get; init; } = "fp32"; // fp32 | fp16 | bf16 on the wire
    public int GradientChunk { get; init; } = 1 << 18; // floats per gradient message (1 MiB: heartbeats are not stuck behind it)
    public LayoutSpec Layout { get; init; } = new();
}

/// <summary>
/// Which node pool (`Cluster.GpuNode join --pool NAME`) hosts each of the run's entities: a
/// preference the shard allocation follows whenever a node of the pool is up (and returns to when
/// one comes back); with none up the entity runs elsewhere rather than stall. Unset = any node.
/// </summary>
public sealed record LayoutSpec
{
    public string? Generator { get; init; }
    public string? Teacher { get; init; }
    public string[] Student { get; init; } = [];      // one pool for every replica, or one per replica

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
