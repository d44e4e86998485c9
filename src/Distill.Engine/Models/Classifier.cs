using TorchSharp;
using static TorchSharp.torch;

namespace Distill.Engine.Models;

/// <summary>Logits and the feature vector the last fully connected layer reads.</summary>
public readonly record struct ClassifierOutput(Tensor Logits, Tensor Features);

/// <summary>
/// Every teacher and student: <c>forward</c> gives logits; <see cref="ForwardWithFeatures"/> also
/// gives the feature vector (DAFL's activation loss reads it). Sub-modules are invoked with
/// <c>call</c> so that forward hooks (BatchNorm statistics) fire.
/// </summary>
public abstract class Classifier : nn.Module<Tensor, Tensor>
{
    protected Classifier(string name, ModelInfo info) : base(name) => Info = info;

    public ModelInfo Info { get; }

    public abstract ClassifierOutput ForwardWithFeatures(Tensor input);

    public override Tensor forward(Tensor input) => ForwardWithFeatures(input).Logits;

    protected void CheckInput(Tensor input)
    {
        var s = input.shape;
        if (s.Length != 4 || s[1] != Info.Channels || s[2] != Info.ImageSize || s[3] != Info.ImageSize)
            throw new ArgumentException(
                $"{Info.Arch} expects input [N, {Info.Channels}, {Info.ImageSize}, {Info.ImageSize}], got [{string.Join(", ", s)}]");
    }
}

/// <summary>What a model was built as: enough to rebuild it from a checkpoint.</summary>
public sealed record ModelInfo(string Arch, int Channels, int ImageSize, int Classes);
