using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Distill.Engine.Models;

/// <summary>
/// LeNet-5 as in the DAFL code (32x32 input): conv5-relu-maxpool twice, conv5 to a 1x1 map, then
/// two fully connected layers. Features are the flattened output of the third convolution
/// (120-d; 60-d for the half network, whose every width is halved).
/// </summary>
public sealed class LeNet5 : Classifier
{
    private readonly Conv2dLayer conv1, conv2, conv3;
    private readonly Linear fc1, fc2;

    public LeNet5(ModelInfo info, bool half) : base(half ? "LeNet5Half" : "LeNet5", info)
    {
        if (info.ImageSize != 32) throw new ArgumentException($"{info.Arch} needs 32x32 inputs (resize: 32), got {info.ImageSize}");
        var (c1, c2, c3, f1) = half ? (3, 8, 60, 42) : (6, 16, 120, 84);
        conv1 = new Conv2dLayer(info.Channels, c1, 5);
        conv2 = new Conv2dLayer(c1, c2, 5);
        conv3 = new Conv2dLayer(c2, c3, 5);
        fc1 = Linear(c3, f1);
        fc2 = Linear(f1, info.Classes);
        RegisterComponents();
    }

    public override ClassifierOutput ForwardWithFeatures(Tensor input)
    {
        CheckInput(input);
        var x = functional.max_pool2d(functional.relu(conv1.call(input)), 2, 2);
        x = functional.max_pool2d(functional.relu(conv2.call(x)), 2, 2);
        var features = functional.relu(conv3.call(x)).flatten(1);
        var logits = fc2.call(functional.relu(fc1.call(features)));
        return new ClassifierOutput(logits, features);
    }
}
