using static TorchSharp.torch;

namespace Distill.Engine.Imaging;

/// <summary>Tiles a batch of normalised images into one PNG, undoing the normalisation.</summary>
public static class SampleGrid
{
    public static byte[] ToPng(Tensor images, double[] mean, double[] std, int pad = 2)
    {
        using var scope = NewDisposeScope();
        var x = images.detach().cpu().to(float32);
        var (n, c, h, w) = ((int)x.shape[0], (int)x.shape[1], (int)x.shape[2], (int)x.shape[3]);
        var m = tensor(mean.Select(v => (float)v).ToArray()).view(1, c, 1, 1);
        var s = tensor(std.Select(v => (float)v).ToArray()).view(1, c, 1, 1);
        var bytes = (x * s + m).clamp(0, 1).mul(255).round().to(uint8).permute(0, 2, 3, 1).contiguous().data<byte>().ToArray();
        var cols = (int)Math.Ceiling(Math.Sqrt(n));
        var rows = (n + cols - 1) / cols;
        var gw = cols * (w + pad) + pad;
        var gh = rows * (h + pad) + pad;
        var grid = new byte[gw * gh * c];
        for (var i = 0; i < n; i++)
        {
            var (r0, c0) = (pad + i / cols * (h + pad), pad + i % cols * (w + pad));
            for (var y = 0; y < h; y++)
                Array.Copy(bytes, (i * h * w + y * w) * c, grid, ((r0 + y) * gw + c0) * c, w * c);
        }
        return Png.Encode(grid, gw, gh, c);
    }
}
