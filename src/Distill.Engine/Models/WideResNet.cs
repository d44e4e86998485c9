using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Distill.Engine.Models;

/// <summary>
/// Wide ResNet WRN-depth-k (Zagoruyko and Komodakis), pre-activation, as the data-free
/// repositories define it (zju-vipa Fast-Datafree classifiers/wresnet.py, after polo5's zero-shot
/// KT code), names included: conv1, block1..3 each a `layer` of blocks (bn1, conv1, bn2, conv2 and
/// a 1x1 convShortcut where the width changes), bn1, fc. Widths 16, 16k, 32k, 64k; (depth - 4) / 6
/// blocks per group. A block whose width changes takes relu(bn1(x)) as its shortcut's input too,
/// and nothing follows the sum. Features: the pooled vector after the last BN and ReLU.
/// </summary>
public sealed class WideResNet : Classifier
{
    private readonly Conv2dLayer conv1;
    private readonly Group block1, block2, block3;
    private readonly BatchNorm2d bn1;
    private readonly Linear fc;

    public WideResNet(ModelInfo info, int depth, int widen) : base("WideResNet", info)
    {
        if ((depth - 4) % 6 != 0) throw new ArgumentException($"WRN depth {depth} is not 6n + 4");
        var n = (depth - 4) / 6;
        int[] w = [16, 16 * widen, 32 * widen, 64 * widen];
        conv1 = new Conv2dLayer(info.Channels, w[0], 3, padding: 1, hasBias: false);
        block1 = new Group(n, w[0], w[1], 1);
        block2 = new Group(n, w[1], w[2], 2);
        block3 = new Group(n, w[2], w[3], 2);
        bn1 = BatchNorm2d(w[3]);
        fc = Linear(w[3], info.Classes);
        RegisterComponents();
        // the reference code's initialisation: He-normal convolutions (fan-out), BN 1 and 0, zero linear bias
        using var _ = no_grad();
        foreach (var c in modules().OfType<Conv2dLayer>())
            init.normal_(c.Weight, 0, Math.Sqrt(2.0 / (c.Weight.shape[0] * c.Weight.shape[2] * c.Weight.shape[3])));
        fc.bias!.zero_();
    }

    public override ClassifierOutput ForwardWithFeatures(Tensor input)
    {
        CheckInput(input);
        var x = block3.call(block2.call(block1.call(conv1.call(input))));
        x = functional.relu(bn1.call(x));
        var features = functional.adaptive_avg_pool2d(x, [1, 1]).flatten(1);
        return new ClassifierOutput(fc.call(features), features);
    }

    private sealed class Group : Module<Tensor, Tensor>
    {
        private readonly Sequential layer;

        public Group(int n, int inC, int outC, int stride) : base("NetworkBlock")
        {
            layer = Sequential(Enumerable.Range(0, n)
                .Select(i => ($"{i}", (Module<Tensor, Tensor>)new Block(i == 0 ? inC : outC, outC, i == 0 ? stride : 1))).ToArray());
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => layer.call(x);
    }

    private sealed class Block : Module<Tensor, Tensor>
    {
        // declared in the PyTorch definition's order: RegisterComponents registers fields as declared, and state_dict lists them so
        private readonly BatchNorm2d bn1;
        private readonly Conv2dLayer conv1;
        private readonly BatchNorm2d bn2;
        private readonly Conv2dLayer conv2;
        private readonly Conv2dLayer? convShortcut;

        public Block(int inC, int outC, int stride) : base("BasicBlock")
        {
            bn1 = BatchNorm2d(inC);
            conv1 = new Conv2dLayer(inC, outC, 3, stride: stride, padding: 1, hasBias: false);
            bn2 = BatchNorm2d(outC);
            conv2 = new Conv2dLayer(outC, outC, 3, padding: 1, hasBias: false);
            if (inC != outC) convShortcut = new Conv2dLayer(inC, outC, 1, stride: stride, hasBias: false);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            var a = functional.relu(bn1.call(x));
            var y = conv2.call(functional.relu(bn2.call(conv1.call(a))));
            return y + (convShortcut is null ? x : convShortcut.call(a));
        }
    }
}
