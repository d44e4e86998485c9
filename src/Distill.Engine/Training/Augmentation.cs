using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Distill.Engine.Training;

/// <summary>
/// The CIFAR repositories' training augmentation (torchvision RandomCrop(size, padding=4) then
/// RandomHorizontalFlip), on normalised batches: each image is padded with black (in normalised
/// units, -mean/std per channel), cropped back at a random offset, and mirrored with probability
/// one half. The draws come from the batch order's own generator, so that they are saved and
/// restored with it.
/// </summary>
public sealed record Augmentation(int Padding, double[] PadValue)
{
    /// <summary>What data.augment says for this dataset (auto: crop-flip for CIFAR-10/100, nothing otherwise).</summary>
    public static Augmentation? For(DataSpec spec)
    {
        var crop = spec.Augment switch
        {
            "crop-flip" => true,
            "auto" => spec.Name is "cifar10" or "cifar100",
            _ => false,
        };
        if (!crop) return null;
        var (mean, std, _) = DataSplits.Constants(spec.Name);
        return new Augmentation(4, mean.Zip(std, (m, s) => -m / s).ToArray());
    }

    public Tensor Apply(Tensor x, Generator generator)
    {
        using var scope = NewDisposeScope();
        var (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        if (c != PadValue.Length) throw new ArgumentException($"augmentation for {PadValue.Length} channels got {c}");
        var p = Padding;
        var offY = randint(0, 2 * p + 1, [n], generator: generator).to(x.device);
        var offX = randint(0, 2 * p + 1, [n], generator: generator).to(x.device);
        var flip = randint(0, 2, [n], generator: generator).to(x.device).to(ScalarType.Bool);
        var fill = tensor(PadValue.Select(v => (float)v).ToArray(), device: x.device).to(x.dtype).view(1, c, 1, 1);
        var padded = nn.functional.pad(x - fill, [p, p, p, p]) + fill;
        var rows = offY.view(n, 1) + arange(h, device: x.device).view(1, h);
        var along = arange(w, device: x.device).view(1, w);
        var cols = where(flip.view(n, 1), offX.view(n, 1) + (w - 1) - along, offX.view(n, 1) + along);
        var byRow = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * p));
        return byRow.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w)).MoveToOuterDisposeScope();
    }
}
