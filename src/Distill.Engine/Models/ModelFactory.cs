namespace Distill.Engine.Models;

/// <summary>Builds a classifier by architecture name; the names are the run spec's vocabulary.</summary>
public static class ModelFactory
{
    public static readonly IReadOnlyList<string> Architectures =
        ["lenet5", "lenet5-half", "hinton-1200", "hinton-800", "hinton-600", "hinton-400", "resnet8", "resnet20", "resnet18", "resnet34"];

    public static Classifier Create(string arch, int channels, int imageSize, int classes)
    {
        var info = new ModelInfo(arch, channels, imageSize, classes);
        return arch switch
        {
            "lenet5" => new LeNet5(info, half: false),
            "lenet5-half" => new LeNet5(info, half: true),
            "hinton-1200" => new HintonMlp(info, 1200, 0.5),
            "hinton-800" => new HintonMlp(info, 800, 0.5),
            "hinton-600" => new HintonMlp(info, 600, 0.5),
            "hinton-400" => new HintonMlp(info, 400, 0.5),
            "resnet8" => new ResNet(info, [1, 1, 1], [16, 32, 64]),
            "resnet20" => new ResNet(info, [3, 3, 3], [16, 32, 64]),
            "resnet18" => new ResNet(info, [2, 2, 2, 2], [64, 128, 256, 512]),
            "resnet34" => new ResNet(info, [3, 4, 6, 3], [64, 128, 256, 512]),
            _ => throw new ArgumentException($"unknown architecture '{arch}' (known: {string.Join(", ", Architectures)})"),
        };
    }
}
