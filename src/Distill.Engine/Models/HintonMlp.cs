using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Distill.Engine.Models;

/// <summary>
/// Hinton et al.'s MNIST networks: two hidden ReLU layers (1200 for the teacher, 800 for the
/// student; 'half' networks halve them), dropout between layers when training. Features are the
/// second hidden layer's activations.
/// </summary>
public sealed class HintonMlp : Classifier
{
    private readonly Linear fc1, fc2, fc3;
    private readonly Dropout drop;

    public HintonMlp(ModelInfo info, int hidden, double dropout) : base($"HintonMlp{hidden}", info)
    {
        var inputs = info.Channels * info.ImageSize * info.ImageSize;
        fc1 = Linear(inputs, hidden);
        fc2 = Linear(hidden, hidden);
        fc3 = Linear(hidden, info.Classes);
        drop = Dropout(dropout);
        RegisterComponents();
    }

    public override ClassifierOutput ForwardWithFeatures(Tensor input)
    {
        CheckInput(input);
        var x = drop.call(functional.relu(fc1.call(input.flatten(1))));
        var features = functional.relu(fc2.call(x));
        return new ClassifierOutput(fc3.call(drop.call(features)), features);
    }
}
