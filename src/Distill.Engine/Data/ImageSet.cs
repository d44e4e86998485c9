using TorchSharp;
using static TorchSharp.torch;

namespace Distill.Engine.Data;

/// <summary>
/// Raw images as bytes in [N, C, H, W] order with one label each, before any transform.
/// </summary>
public sealed record ImageSet(byte[] Pixels, byte[] Labels, int Count, int Channels, int Height, int Width)
{
    /// <summary>
    /// Float tensor [N, C, size, size]: pixels / 255, resized bilinearly if size differs (the DAFL
    /// code's Resize((32, 32)) on 28x28 MNIST), then normalised per channel.
    /// </summary>
    public Tensor ToTensor(int size, double[] mean, double[] std)
    {
        if (mean.Length != Channels || std.Length != Channels)
            throw new ArgumentException($"normalisation needs {Channels} means and stds, got {mean.Length} and {std.Length}");
        using var scope = NewDisposeScope();
        var x = tensor(Pixels, [Count, Channels, Height, Width]).to(float32) / 255.0f;
        if (size != Height || size != Width)
        {
            // in chunks, so that peak memory stays a few hundred MB for 60k images
            var parts = new List<Tensor>();
            for (long i = 0; i < Count; i += 8192)
                parts.Add(nn.functional.interpolate(x[(int)i..(int)Math.Min(Count, i + 8192)], size: [size, size],
                    mode: InterpolationMode.Bilinear, align_corners: false).clamp(0, 1));
            x = cat(parts, 0);
        }
        var m = tensor(mean.Select(v => (float)v).ToArray()).view(1, Channels, 1, 1);
        var s = tensor(std.Select(v => (float)v).ToArray()).view(1, Channels, 1, 1);
        return ((x - m) / s).contiguous().MoveToOuterDisposeScope();
    }

    public Tensor LabelTensor() => tensor(Labels.Select(b => (long)b).ToArray());

    public ImageSet Take(int n)
    {
        n = Math.Min(n, Count);
        var per = Channels * Height * Width;
        return this with { Pixels = Pixels.AsSpan(0, n * per).ToArray(), Labels = Labels.AsSpan(0, n).ToArray(), Count = n };
    }

    /// <summary>The images after the first n.</summary>
    public ImageSet Skip(int n)
    {
        n = Math.Min(n, Count);
        var per = Channels * Height * Width;
        return this with { Pixels = Pixels.AsSpan(n * per).ToArray(), Labels = Labels.AsSpan(n).ToArray(), Count = Count - n };
    }
}
