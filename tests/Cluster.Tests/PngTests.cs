using System.Buffers.Binary;
using System.IO.Compression;
using Distill.Engine.Imaging;
using static TorchSharp.torch;

namespace Cluster.Tests;

[Collection(TorchLane.Name), TorchLane]
public sealed class PngTests
{
    [Fact]
    public void Crc32_matches_the_standard_check_value()
    {
        // CRC-32 of "123456789" is 0xCBF43926 (the published check value)
        Assert.Equal(0xCBF43926u, Png.Crc32("123456789"u8) ^ 0xFFFFFFFFu);
    }

    [Fact]
    public void Encoded_png_decodes_to_the_same_pixels()
    {
        var pixels = Enumerable.Range(0, 5 * 3 * 3).Select(i => (byte)(i * 5)).ToArray();
        var png = Png.Encode(pixels, 5, 3, 3);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
        Assert.Equal(5, BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)));
        Assert.Equal(3, BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20)));
        // IDAT starts after signature (8) + IHDR chunk (25)
        var idatLen = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(33));
        using var z = new ZLibStream(new MemoryStream(png, 41, idatLen), CompressionMode.Decompress);
        var raw = new MemoryStream();
        z.CopyTo(raw);
        var rows = raw.ToArray();
        Assert.Equal(3 * (1 + 15), rows.Length);
        for (var y = 0; y < 3; y++)
        {
            Assert.Equal(0, rows[y * 16]);   // filter type none
            Assert.Equal(pixels[(y * 15)..(y * 15 + 15)], rows[(y * 16 + 1)..(y * 16 + 16)]);
        }
    }

    [Fact]
    public void Sample_grid_undoes_normalisation_and_tiles()
    {
        Torch.Init();
        var x = full(new long[] { 4, 1, 2, 2 }, (1.0f - 0.5f) / 0.25f);   // normalised white
        var png = SampleGrid.ToPng(x, [0.5], [0.25], pad: 1);
        Assert.Equal(2 * 3 + 1, BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)));   // 2 columns of 2px + padding
    }
}
