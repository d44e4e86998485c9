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
    /// <remarks>
    /// Chunk by chunk, in place, into the one output tensor: each element goes through the same
    /// operations as the whole-set formula, so the bits are the same, but a process that loads
    /// MNIST touches one 250 MB buffer instead of seven (fresh pages fault in one by one, and a
    /// node, a trial or a test run loads its data every time it starts).
    /// </remarks>
    public Tensor ToTensor(int size, double[] mean, double[] std)
    {
        if (mean.Length != Channels || std.Length != Channels)
            throw new ArgumentException($"normalisation needs {Channels} means and stds, got {mean.Length} and {std.Length}");
        var output = empty([Count, Channels, size, size], float32);
        try
        {
            using var scope = NewDisposeScope();
            var bytes = tensor(Pixels, [Count, Channels, Height, Width]);
            var m = tensor(mean.Select(v => (float)v).ToArray()).view(1, Channels, 1, 1);
            var s = tensor(std.Select(v => (float)v).ToArray()).view(1, Channels, 1, 1);
            for (var i = 0; i < Count; i += Chunk)
            {
                using var chunk = NewDisposeScope();
                var x = bytes[i..Math.Min(Count, i + Chunk)].to(float32).div_(255.0f);
                if (size != Height || size != Width)
                    x = nn.functional.interpolate(x, size: [size, size], mode: InterpolationMode.Bilinear, align_corners: false).clamp_(0, 1);
                output[i..Math.Min(Count, i + Chunk)].copy_(x.sub_(m).div_(s));
            }
            return output;
        }
        catch
        {
            output.Dispose();
            throw;
        }
    }

    /// <summary>Images transformed at a time: 32 MB of floats at 32x32.</summary>
    private const int Chunk = 8192;

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
