namespace Distill.Engine.Models;

/// <summary>
/// Builds a classifier by architecture name; the names are the run spec's vocabulary. resnet*,
/// wrn-* and vgg*-bn are the CIFAR networks of the data-free distillation repositories and
/// torchvision-resnet* torchvision's ImageNet ones, with their PyTorch parameter names
/// (tools/torch_models.py defines each in PyTorch).
/// </summary>
public static class ModelFactory
{
    public static readonly IReadOnlyList<string> Architectures =
    [
        "lenet5", "lenet5-half", "hinton-1200", "hinton-800", "hinton-800-plain", "hinton-600", "hinton-400",
        "resnet8", "resnet20", "resnet18", "resnet34", "resnet50",
        "wrn-16-1", "wrn-16-2", "wrn-40-1", "wrn-40-2", "vgg8-bn", "vgg11-bn",
        "torchvision-resnet18", "torchvision-resnet34", "torchvision-resnet50",
    ];

    /// <summary>
    /// Whether the architecture has BatchNorm2d layers (every one but LeNet-5's and the Hinton MLPs),
    /// which DeepInversion's hooks need; a spec is checked by name, without building the network.
    /// </summary>
    public static bool HasBatchNorm(string arch) => !arch.StartsWith("lenet5", StringComparison.Ordinal) && !arch.StartsWith("hinton-", StringComparison.Ordinal);

    public static Classifier Create(string arch, int channels, int imageSize, int classes)
    {
        var info = new ModelInfo(arch, channels, imageSize, classes);
        return arch switch
        {
            "lenet5" => new LeNet5(info, half: false),
            "lenet5-half" => new LeNet5(info, half: true),
            "hinton-1200" => new HintonMlp(info, 1200, 0.5),
            "hinton-800" => new HintonMlp(info, 800, 0.5),
            // Hinton et al.'s student without regularisation (146 errors alone, 74 distilled) and DAFL's HintonNet-half
            "hinton-800-plain" => new HintonMlp(info, 800, 0.0),
            "hinton-600" => new HintonMlp(info, 600, 0.5),
            "hinton-400" => new HintonMlp(info, 400, 0.5),
            "resnet8" => ResNet.Cifar(info, false, [1, 1, 1], [16, 32, 64]),
            "resnet20" => ResNet.Cifar(info, false, [3, 3, 3], [16, 32, 64]),
            "resnet18" => ResNet.Cifar(info, false, [2, 2, 2, 2], [64, 128, 256, 512]),
            "resnet34" => ResNet.Cifar(info, false, [3, 4, 6, 3], [64, 128, 256, 512]),
            "resnet50" => ResNet.Cifar(info, true, [3, 4, 6, 3], [64, 128, 256, 512]),
            "wrn-16-1" => new WideResNet(info, 16, 1),
            "wrn-16-2" => new WideResNet(info, 16, 2),
            "wrn-40-1" => new WideResNet(info, 40, 1),
            "wrn-40-2" => new WideResNet(info, 40, 2),
            "vgg8-bn" => new Vgg(info, 8),
            "vgg11-bn" => new Vgg(info, 11),
            "torchvision-resnet18" => ResNet.Torchvision(info, false, [2, 2, 2, 2]),
            "torchvision-resnet34" => ResNet.Torchvision(info, false, [3, 4, 6, 3]),
            "torchvision-resnet50" => ResNet.Torchvision(info, true, [3, 4, 6, 3]),
            _ => throw new ArgumentException($"unknown architecture '{arch}' (known: {string.Join(", ", Architectures)})"),
        };
    }
}
