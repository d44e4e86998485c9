using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Distill.Engine.Models;

/// <summary>
/// ResNet with BatchNorm after every convolution (DeepInversion reads those layers' running
/// statistics). CIFAR-style stem (3x3 conv, no max-pool) so it works on 28x28 and 32x32 inputs;
/// stages of basic blocks, stride 2 between stages. Features: the globally pooled vector.
/// </summary>
public sealed class ResNet : Classifier
{
    private readonly Conv2dLayer stem;
    private readonly BatchNorm2d stemBn;
    private readonly Sequential stages;
    private readonly Linear fc;

    public ResNet(ModelInfo info, int[] blocksPerStage, int[] widths) : base("ResNet", info)
    {
        if (blocksPerStage.Length != widths.Length) throw new ArgumentException("one width per stage");
        stem = new Conv2dLayer(info.Channels, widths[0], 3, padding: 1, hasBias: false);
        stemBn = BatchNorm2d(widths[0]);
        var blocks = new List<(string, Module<Tensor, Tensor>)>();
        var inC = widths[0];
        for (var s = 0; s < widths.Length; s++)
            for (var b = 0; b < blocksPerStage[s]; b++)
            {
                var stride = s > 0 && b == 0 ? 2 : 1;
                blocks.Add(($"s{s}b{b}", new BasicBlock($"s{s}b{b}", inC, widths[s], stride)));
                inC = widths[s];
            }
        stages = Sequential(blocks);
        fc = Linear(inC, info.Classes);
        RegisterComponents();
    }

    public override ClassifierOutput ForwardWithFeatures(Tensor input)
    {
        CheckInput(input);
        var x = functional.relu(stemBn.call(stem.call(input)));
        x = stages.call(x);
        var features = functional.adaptive_avg_pool2d(x, [1, 1]).flatten(1);
        return new ClassifierOutput(fc.call(features), features);
    }

    private sealed class BasicBlock : Module<Tensor, Tensor>
    {
        private readonly Conv2dLayer conv1, conv2;
        private readonly BatchNorm2d bn1, bn2;
        private readonly Sequential? shortcut;

        public BasicBlock(string name, int inC, int outC, int stride) : base(name)
        {
            conv1 = new Conv2dLayer(inC, outC, 3, stride: stride, padding: 1, hasBias: false);
            bn1 = BatchNorm2d(outC);
            conv2 = new Conv2dLayer(outC, outC, 3, padding: 1, hasBias: false);
            bn2 = BatchNorm2d(outC);
            if (stride != 1 || inC != outC)
                shortcut = Sequential(new Conv2dLayer(inC, outC, 1, stride: stride, hasBias: false), BatchNorm2d(outC));
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            var y = functional.relu(bn1.call(conv1.call(x)));
            y = bn2.call(conv2.call(y));
            return functional.relu(y + (shortcut is null ? x : shortcut.call(x)));
        }
    }
}
