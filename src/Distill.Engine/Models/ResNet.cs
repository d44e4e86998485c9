using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Distill.Engine.Models;

/// <summary>
/// ResNet with BatchNorm after every convolution (DeepInversion reads those layers' running
/// statistics), with the module names of the PyTorch code users train teachers with, so that
/// their state_dicts load as saved:
/// <list type="bullet">
/// <item>CIFAR style (<see cref="Cifar"/>), as in the data-free repositories (DAFL's resnet.py,
/// zju-vipa Fast-Datafree's classifiers/resnet.py): 3x3 stem conv1/bn1, no max-pool,
/// layer1..layerN, global average pool, linear; blocks conv1/bn1/conv2/bn2[/conv3/bn3] and a
/// `shortcut` Sequential(conv 1x1, BN) where the shape changes.</item>
/// <item>torchvision style (<see cref="Torchvision"/>), torchvision.models.resnet18/34/50 (v1.5:
/// a bottleneck's stride on its 3x3 conv): 7x7 stride-2 stem, 3x3 max-pool, `downsample`, fc.</item>
/// </list>
/// Features: the globally pooled vector.
/// </summary>
public sealed class ResNet : Classifier
{
    public enum Stem { Cifar, Torchvision }

    private readonly Conv2dLayer conv1;
    private readonly BatchNorm2d bn1;
    private readonly Sequential[] layers;
    private readonly Linear head;
    private readonly Stem stem;

    public static ResNet Cifar(ModelInfo info, bool bottleneck, int[] blocksPerStage, int[] widths) =>
        new(info, Stem.Cifar, bottleneck, blocksPerStage, widths);

    public static ResNet Torchvision(ModelInfo info, bool bottleneck, int[] blocksPerStage) =>
        new(info, Stem.Torchvision, bottleneck, blocksPerStage, [64, 128, 256, 512]);

    private ResNet(ModelInfo info, Stem stem, bool bottleneck, int[] blocksPerStage, int[] widths) : base("ResNet", info)
    {
        if (blocksPerStage.Length != widths.Length) throw new ArgumentException("one width per stage");
        this.stem = stem;
        var shortcutName = stem == Stem.Cifar ? "shortcut" : "downsample";
        conv1 = stem == Stem.Cifar
            ? new Conv2dLayer(info.Channels, widths[0], 3, padding: 1, hasBias: false)
            : new Conv2dLayer(info.Channels, widths[0], 7, stride: 2, padding: 3, hasBias: false);
        bn1 = BatchNorm2d(widths[0]);
        register_module("conv1", conv1);
        register_module("bn1", bn1);
        layers = new Sequential[widths.Length];
        var inC = widths[0];
        var expansion = bottleneck ? 4 : 1;
        for (var s = 0; s < widths.Length; s++)
        {
            var blocks = new List<(string, Module<Tensor, Tensor>)>();
            for (var b = 0; b < blocksPerStage[s]; b++)
            {
                var stride = s > 0 && b == 0 ? 2 : 1;
                blocks.Add(($"{b}", bottleneck
                    ? new Bottleneck(inC, widths[s], stride, shortcutName)
                    : new BasicBlock(inC, widths[s], stride, shortcutName)));
                inC = widths[s] * expansion;
            }
            layers[s] = Sequential(blocks);
            register_module($"layer{s + 1}", layers[s]);
        }
        head = Linear(inC, info.Classes);
        register_module(stem == Stem.Cifar ? "linear" : "fc", head);
        if (stem == Stem.Torchvision)
            foreach (var m in modules().OfType<Conv2dLayer>())
                init.kaiming_normal_(m.Weight, mode: init.FanInOut.FanOut, nonlinearity: init.NonlinearityType.ReLU);
    }

    public override ClassifierOutput ForwardWithFeatures(Tensor input)
    {
        CheckInput(input);
        var x = functional.relu(bn1.call(conv1.call(input)));
        if (stem == Stem.Torchvision) x = functional.max_pool2d(x, 3, 2, 1);
        foreach (var layer in layers) x = layer.call(x);
        var features = functional.adaptive_avg_pool2d(x, [1, 1]).flatten(1);
        return new ClassifierOutput(head.call(features), features);
    }

    private static Sequential? Shortcut(int inC, int outC, int stride) =>
        stride != 1 || inC != outC ? Sequential(new Conv2dLayer(inC, outC, 1, stride: stride, hasBias: false), BatchNorm2d(outC)) : null;

    private sealed class BasicBlock : Module<Tensor, Tensor>
    {
        private readonly Conv2dLayer conv1, conv2;
        private readonly BatchNorm2d bn1, bn2;
        private readonly Sequential? shortcut;

        public BasicBlock(int inC, int outC, int stride, string shortcutName) : base("BasicBlock")
        {
            conv1 = new Conv2dLayer(inC, outC, 3, stride: stride, padding: 1, hasBias: false);
            bn1 = BatchNorm2d(outC);
            conv2 = new Conv2dLayer(outC, outC, 3, padding: 1, hasBias: false);
            bn2 = BatchNorm2d(outC);
            shortcut = Shortcut(inC, outC, stride);
            register_module("conv1", conv1);
            register_module("bn1", bn1);
            register_module("conv2", conv2);
            register_module("bn2", bn2);
            if (shortcut is not null) register_module(shortcutName, shortcut);
        }

        public override Tensor forward(Tensor x)
        {
            var y = functional.relu(bn1.call(conv1.call(x)));
            y = bn2.call(conv2.call(y));
            return functional.relu(y + (shortcut is null ? x : shortcut.call(x)));
        }
    }

    private sealed class Bottleneck : Module<Tensor, Tensor>
    {
        private readonly Conv2dLayer conv1, conv2, conv3;
        private readonly BatchNorm2d bn1, bn2, bn3;
        private readonly Sequential? shortcut;

        public Bottleneck(int inC, int planes, int stride, string shortcutName) : base("Bottleneck")
        {
            conv1 = new Conv2dLayer(inC, planes, 1, hasBias: false);
            bn1 = BatchNorm2d(planes);
            conv2 = new Conv2dLayer(planes, planes, 3, stride: stride, padding: 1, hasBias: false);
            bn2 = BatchNorm2d(planes);
            conv3 = new Conv2dLayer(planes, planes * 4, 1, hasBias: false);
            bn3 = BatchNorm2d(planes * 4);
            shortcut = Shortcut(inC, planes * 4, stride);
            register_module("conv1", conv1);
            register_module("bn1", bn1);
            register_module("conv2", conv2);
            register_module("bn2", bn2);
            register_module("conv3", conv3);
            register_module("bn3", bn3);
            if (shortcut is not null) register_module(shortcutName, shortcut);
        }

        public override Tensor forward(Tensor x)
        {
            var y = functional.relu(bn1.call(conv1.call(x)));
            y = functional.relu(bn2.call(conv2.call(y)));
            y = bn3.call(conv3.call(y));
            return functional.relu(y + (shortcut is null ? x : shortcut.call(x)));
        }
    }
}
