using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>
/// The normalised values that real pixels in [0, 1] take, per channel: (0 - mean) / std to
/// (1 - mean) / std. A data-free method knows the teacher's input normalisation, so it knows this
/// range without seeing any data (DeepInversion clips its pixels to it too).
/// </summary>
public sealed record PixelRange(double[] Low, double[] High)
{
    public static PixelRange Normalised(double[] mean, double[] std)
    {
        if (mean.Length != std.Length || mean.Length == 0) throw new ArgumentException($"mean has {mean.Length} channels, std {std.Length}");
        return new PixelRange(mean.Zip(std, (m, s) => -m / s).ToArray(), mean.Zip(std, (m, s) => (1 - m) / s).ToArray());
    }

    /// <summary>Per-channel bounds shaped [1, C, 1, 1] for images [N, C, H, W].</summary>
    public (Tensor Low, Tensor High) Bounds(Device device)
    {
        using var lo = tensor(Low.Select(v => (float)v).ToArray(), device: device);
        using var hi = tensor(High.Select(v => (float)v).ToArray(), device: device);
        return (lo.reshape(1, Low.Length, 1, 1), hi.reshape(1, High.Length, 1, 1));
    }
}
