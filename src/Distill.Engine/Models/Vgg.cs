using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Distill.Engine.Models;

/// <summary>
/// VGG with BatchNorm for CIFAR as the distillation repositories define it (RepDistiller's
/// models/vgg.py, used by zju-vipa Fast-Datafree), names included: five blocks block0..4 of
/// conv 3x3 (with bias), BN, ReLU (the block's last ReLU applied outside it, so a block's indices
/// are 0 conv, 1 bn, 2 relu, 3 conv, 4 bn), 2x2 max-pools after blocks 0-2 (and 3 on 64-pixel
/// inputs only), a global average pool and one linear `classifier`. VGG-8: one conv per block;
/// VGG-11: 1, 1, 2, 2, 2. Features: the pooled 512-d vector.
/// </summary>
public sealed class Vgg : Classifier
{
    private readonly Sequential block0, block1, block2, block3, block4;
    private readonly Linear classifier;

    public static readonly IReadOnlyDictionary<int, int[][]> Configs = new Dictionary<int, int[][]>
    {
        [8] = [[64], [128], [256], [512], [512]],
        [11] = [[64], [128], [256, 256], [512, 512], [512, 512]],
    };

    public Vgg(ModelInfo info, int depth) : base($"Vgg{depth}", info)
    {
        var cfg = Configs.TryGetValue(depth, out var c) ? c : throw new ArgumentException($"no VGG-{depth} (known: {string.Join(", ", Configs.Keys)})");
        var inC = info.Channels;
        Sequential Block(int[] widths)
        {
            var mods = new List<(string, Module<Tensor, Tensor>)>();
            foreach (var w in widths)
            {
                if (mods.Count > 0) mods.Add(($"{mods.Count}", ReLU()));
                mods.Add(($"{mods.Count}", new Conv2dLayer(inC, w, 3, padding: 1)));
                mods.Add(($"{mods.Count}", BatchNorm2d(w)));
                inC = w;
            }
            return Sequential(mods);
        }
        block0 = Block(cfg[0]);
        block1 = Block(cfg[1]);
        block2 = Block(cfg[2]);
        block3 = Block(cfg[3]);
        block4 = Block(cfg[4]);
        classifier = Linear(512, info.Classes);
        RegisterComponents();
        // the reference code's initialisation: He-normal convolutions (fan-out) with zero bias, BN 1 and 0, N(0, 0.01) linear
        using var _ = no_grad();
        foreach (var conv in modules().OfType<Conv2dLayer>())
        {
            init.normal_(conv.Weight, 0, Math.Sqrt(2.0 / (conv.Weight.shape[0] * conv.Weight.shape[2] * conv.Weight.shape[3])));
            conv.Bias!.zero_();
        }
        init.normal_(classifier.weight!, 0, 0.01);
        classifier.bias!.zero_();
    }

    public override ClassifierOutput ForwardWithFeatures(Tensor input)
    {
        CheckInput(input);
        var x = functional.max_pool2d(functional.relu(block0.call(input)), 2, 2);
        x = functional.max_pool2d(functional.relu(block1.call(x)), 2, 2);
        x = functional.max_pool2d(functional.relu(block2.call(x)), 2, 2);
        x = functional.relu(block3.call(x));
        if (Info.ImageSize == 64) x = functional.max_pool2d(x, 2, 2);
        x = functional.relu(block4.call(x));
        var features = functional.adaptive_avg_pool2d(x, [1, 1]).flatten(1);
        return new ClassifierOutput(classifier.call(features), features);
    }
}
