using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Distill.Engine.Training;

/// <summary>
/// Training augmentation on normalised batches: each image is padded with black (in normalised
/// units, -mean/std per channel) and cropped back at a random offset, then, for crop-flip,
/// mirrored with probability one half. crop-flip is the CIFAR repositories' RandomCrop(size,
/// padding=4) + RandomHorizontalFlip; jitter is Hinton et al.'s MNIST augmentation, a shift of up
/// to N pixels in each direction (RandomCrop(size, padding=N)). The draws come from the batch
/// order's own generator, so that they are saved and restored with it.
/// </summary>
public sealed record Augmentation(int Padding, double[] PadValue, bool Flip = true)
{
    /// <summary>What data.augment, or the model's own train.augment, says for this dataset (auto: crop-flip for CIFAR-10/100, nothing otherwise).</summary>
    public static Augmentation? For(DataSpec spec, TrainSpec? train = null)
    {
        var augment = train?.Augment ?? spec.Augment;
        var kind = augment == "auto" ? spec.Name is "cifar10" or "cifar100" ? "crop-flip" : "none" : augment;
        if (kind == "none") return null;
        var (mean, std, _) = DataSplits.Constants(spec.Name);
        var black = mean.Zip(std, (m, s) => -m / s).ToArray();
        return kind == "jitter" ? new Augmentation(spec.JitterPixels, black, Flip: false) : new Augmentation(4, black);
    }

    /// <summary>How the augmentation is named in a trained teacher's cache key.</summary>
    public string Key => $"crop{Padding}" + (Flip ? "-flip" : "");

    public Tensor Apply(Tensor x, Generator generator)
    {
        using var scope = NewDisposeScope();
        var (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        if (c != PadValue.Length) throw new ArgumentException($"augmentation for {PadValue.Length} channels got {c}");
        var p = Padding;
        var offY = randint(0, 2 * p + 1, [n], generator: generator).to(x.device);
        var offX = randint(0, 2 * p + 1, [n], generator: generator).to(x.device);
        // the flip draw is made only where flipping is on, so that jitter's draws are its own
        var flip = Flip ? randint(0, 2, [n], generator: generator).to(x.device).to(ScalarType.Bool) : zeros([n], ScalarType.Bool, x.device);
        var fill = tensor(PadValue.Select(v => (float)v).ToArray(), device: x.device).to(x.dtype).view(1, c, 1, 1);
        var padded = nn.functional.pad(x - fill, [p, p, p, p]) + fill;
        var rows = offY.view(n, 1) + arange(h, device: x.device).view(1, h);
        var along = arange(w, device: x.device).view(1, w);
        var cols = where(flip.view(n, 1), offX.view(n, 1) + (w - 1) - along, offX.view(n, 1) + along);
        var byRow = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * p));
        return byRow.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w)).MoveToOuterDisposeScope();
    }
}
