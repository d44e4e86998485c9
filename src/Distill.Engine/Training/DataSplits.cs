using Distill.Engine.Data;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Distill.Engine.Training;

/// <summary>
/// A dataset as normalised tensors on the CPU, with what the models need to know of it. With a
/// validation split (data.validation), the evaluations made during training use it (Eval*), and
/// the test set is kept for the end of a phase.
/// </summary>
public sealed class DataSplits(Tensor trainX, Tensor trainY, Tensor testX, Tensor testY, int channels, int classes, string name, double[] mean, double[] std,
    Tensor? validationX = null, Tensor? validationY = null) : IDisposable
{
    public Tensor TrainX { get; } = trainX;
    public Tensor TrainY { get; } = trainY;
    public Tensor TestX { get; } = testX;
    public Tensor TestY { get; } = testY;
    public Tensor? ValidationX { get; } = validationX;
    public Tensor? ValidationY { get; } = validationY;
    public bool HasValidation => ValidationX is not null;
    /// <summary>What evaluations during training measure: the validation split where there is one, else the test set.</summary>
    public Tensor EvalX => ValidationX ?? TestX;
    public Tensor EvalY => ValidationY ?? TestY;
    /// <summary>The metrics column of those evaluations.</summary>
    public string EvalMetric => HasValidation ? ValidationAccuracy : TestAccuracy;
    public const string TestAccuracy = "test_accuracy", ValidationAccuracy = "val_accuracy";
    public int Channels { get; } = channels;
    public int Classes { get; } = classes;
    public string Name { get; } = name;
    public double[] Mean { get; } = mean;
    public double[] Std { get; } = std;
    public int ImageSize => (int)TrainX.shape[2];

    /// <summary>Normalisation constants per dataset, as the DAFL/torchvision code uses them.</summary>
    public static (double[] Mean, double[] Std, int Classes) Constants(string name) => name switch
    {
        "mnist" or "idx" => ([0.1307], [0.3081], 10),
        "fashion-mnist" => ([0.2860], [0.3530], 10),
        "cifar10" => ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010], 10),
        // as the data-free repositories normalise (zju-vipa Fast-Datafree registry.py NORMALIZE_DICT)
        "cifar100" => ([0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761], 100),
        _ => throw new ArgumentException($"unknown dataset '{name}'"),
    };

    /// <summary>Test images a spec's dataset has, without loading it; null where only the files tell (idx).</summary>
    public static long? TestImages(DataSpec spec) => spec.Name switch { "mnist" or "fashion-mnist" or "cifar10" or "cifar100" => 10_000, _ => null };

    /// <summary>Training images a spec's dataset has (its train_limit and validation split applied), without loading it; null where only the files tell (idx).</summary>
    public static long? TrainImages(DataSpec spec)
    {
        long? all = spec.Name switch { "mnist" or "fashion-mnist" => 60_000, "cifar10" or "cifar100" => 50_000, _ => null };
        return all is { } n ? Math.Max(0, (spec.TrainLimit > 0 ? Math.Min(n, spec.TrainLimit) : n) - spec.Validation) : all;
    }

    public static DataSplits Load(DataSpec spec, string? cacheRoot = null, TextWriter? log = null)
    {
        ImageSet train, test;
        switch (spec.Name)
        {
            case "mnist" or "fashion-mnist":
                {
                    var dir = spec.Path ?? new DatasetCache(cacheRoot ?? DatasetCache.DefaultRoot(), log).Ensure(spec.Name);
                    (train, test) = ReadIdxFolder(dir);
                    break;
                }
            case "idx":
                (train, test) = ReadIdxFolder(spec.Path!);
                break;
            case "cifar10" or "cifar100":
                {
                    var c100 = spec.Name == "cifar100";
                    var (tr, te) = CifarReader.StandardFiles(spec.Path!, c100);
                    (train, test) = (CifarReader.Read(tr, c100), CifarReader.Read(te, c100));
                    break;
                }
            default: throw new ArgumentException($"unknown dataset '{spec.Name}'");
        }
        if (spec.TrainLimit > 0) train = train.Take(spec.TrainLimit);
        ImageSet? validation = null;
        if (spec.Validation > 0)
        {
            // the last N, as Keras' validation_split and the classic MNIST 50,000/10,000 split take them: the same images for every seed
            if (spec.Validation >= train.Count) throw new InvalidDataException($"{spec.Name}: validation holds out {spec.Validation} images but the training set has {train.Count}");
            validation = train.Skip(train.Count - spec.Validation);
            train = train.Take(train.Count - spec.Validation);
        }
        var (mean, std, classes) = Constants(spec.Name);
        var maxLabel = train.Labels.Concat(test.Labels).Max();
        if (spec.Name == "idx") classes = maxLabel + 1;
        else if (maxLabel >= classes) throw new InvalidDataException($"{spec.Name}: label {maxLabel} is outside its {classes} classes");
        if (train.Channels != mean.Length) throw new InvalidDataException($"{spec.Name}: images have {train.Channels} channels, expected {mean.Length}");
        return new DataSplits(train.ToTensor(spec.ImageSize, mean, std), train.LabelTensor(),
            test.ToTensor(spec.ImageSize, mean, std), test.LabelTensor(), train.Channels, classes, spec.Name, mean, std,
            validation?.ToTensor(spec.ImageSize, mean, std), validation?.LabelTensor());
    }

    private static (ImageSet, ImageSet) ReadIdxFolder(string dir)
    {
        string Find(string stem) =>
            new[] { stem, stem + ".gz" }.Select(f => Path.Combine(dir, f)).FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException($"{dir} has no {stem} (or {stem}.gz)");
        return (IdxReader.ReadPair(Find("train-images-idx3-ubyte"), Find("train-labels-idx1-ubyte")),
                IdxReader.ReadPair(Find("t10k-images-idx3-ubyte"), Find("t10k-labels-idx1-ubyte")));
    }

    public void Dispose()
    {
        TrainX.Dispose(); TrainY.Dispose(); TestX.Dispose(); TestY.Dispose(); ValidationX?.Dispose(); ValidationY?.Dispose();
    }
}
