using System.Buffers.Binary;
using System.IO.Compression;

namespace Distill.Engine.Data;

/// <summary>
/// Reads IDX files (the MNIST format): magic 0x0000 TT DD (TT = 0x08 unsigned byte, DD = number
/// of dimensions), then DD big-endian int32 sizes, then the data. Plain or .gz.
/// </summary>
public static class IdxReader
{
    public sealed record IdxArray(int[] Shape, byte[] Data);

    public static IdxArray Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"IDX file not found: {path}", path);
        using var file = File.OpenRead(path);
        using Stream stream = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(file, CompressionMode.Decompress) : file;
        try { return Read(stream); }
        catch (InvalidDataException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
    }

    public static IdxArray Read(Stream stream)
    {
        Span<byte> header = stackalloc byte[4];
        ReadExactly(stream, header, "header");
        if (header[0] != 0 || header[1] != 0) throw new InvalidDataException("not an IDX file (magic must start with two zero bytes)");
        if (header[2] != 0x08) throw new InvalidDataException($"IDX element type 0x{header[2]:x2} is not supported (only 0x08, unsigned byte)");
        int dims = header[3];
        if (dims is < 1 or > 4) throw new InvalidDataException($"IDX file has {dims} dimensions; expected 1 to 4");
        var shape = new int[dims];
        Span<byte> size = stackalloc byte[4];
        long total = 1;
        for (var i = 0; i < dims; i++)
        {
            ReadExactly(stream, size, $"size of dimension {i}");
            shape[i] = BinaryPrimitives.ReadInt32BigEndian(size);
            if (shape[i] < 0) throw new InvalidDataException($"dimension {i} has negative size {shape[i]}");
            total *= shape[i];
        }
        if (total > int.MaxValue) throw new InvalidDataException($"IDX payload of {total} bytes is too large");
        var data = new byte[total];
        ReadExactly(stream, data, $"payload ({total} bytes for shape [{string.Join(", ", shape)}])");
        return new IdxArray(shape, data);
    }

    /// <summary>Reads an image file and its label file and checks they agree.</summary>
    public static ImageSet ReadPair(string imagesPath, string labelsPath)
    {
        var images = Read(imagesPath);
        var labels = Read(labelsPath);
        if (images.Shape.Length != 3) throw new InvalidDataException($"{imagesPath}: images must be 3-d [N, H, W], got {images.Shape.Length}-d");
        if (labels.Shape.Length != 1) throw new InvalidDataException($"{labelsPath}: labels must be 1-d, got {labels.Shape.Length}-d");
        if (labels.Shape[0] != images.Shape[0])
            throw new InvalidDataException($"{imagesPath} has {images.Shape[0]} images but {labelsPath} has {labels.Shape[0]} labels");
        return new ImageSet(images.Data, labels.Data, images.Shape[0], 1, images.Shape[1], images.Shape[2]);
    }

    private static void ReadExactly(Stream s, Span<byte> buffer, string what)
    {
        var read = 0;
        while (read < buffer.Length)
        {
            var n = s.Read(buffer[read..]);
            if (n == 0) throw new InvalidDataException($"file ends early while reading the {what}");
            read += n;
        }
    }
}
