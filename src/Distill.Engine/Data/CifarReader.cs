namespace Distill.Engine.Data;

/// <summary>
/// CIFAR-10/100 binary format: fixed-size records, each label byte(s) then 3x32x32 pixels in
/// channel-major order (1024 red, 1024 green, 1024 blue). CIFAR-10 has one label byte; CIFAR-100
/// has a coarse then a fine label byte (we keep the fine label).
/// </summary>
public static class CifarReader
{
    public const int PixelBytes = 3 * 32 * 32;

    public static ImageSet Read(IEnumerable<string> files, bool cifar100)
    {
        var labelBytes = cifar100 ? 2 : 1;
        var record = labelBytes + PixelBytes;
        var pixels = new List<byte[]>();
        var labels = new List<byte>();
        foreach (var path in files)
        {
            if (!File.Exists(path)) throw new FileNotFoundException($"CIFAR file not found: {path}", path);
            var bytes = File.ReadAllBytes(path);
            if (bytes.Length == 0 || bytes.Length % record != 0)
                throw new InvalidDataException($"{path}: {bytes.Length} bytes is not a whole number of {record}-byte CIFAR-{(cifar100 ? 100 : 10)} records");
            var classes = cifar100 ? 100 : 10;
            for (var off = 0; off < bytes.Length; off += record)
            {
                var label = bytes[off + labelBytes - 1];
                if (label >= classes) throw new InvalidDataException($"{path}: record {off / record} has label {label}, beyond {classes} classes");
                labels.Add(label);
                pixels.Add(bytes.AsSpan(off + labelBytes, PixelBytes).ToArray());
            }
        }
        var all = new byte[pixels.Count * PixelBytes];
        for (var i = 0; i < pixels.Count; i++) pixels[i].CopyTo(all, i * PixelBytes);
        return new ImageSet(all, labels.ToArray(), labels.Count, 3, 32, 32);
    }

    /// <summary>The standard file names inside cifar-10-batches-bin / cifar-100-binary.</summary>
    public static (string[] Train, string[] Test) StandardFiles(string dir, bool cifar100) =>
        cifar100
            ? ([Path.Combine(dir, "train.bin")], [Path.Combine(dir, "test.bin")])
            : (Enumerable.Range(1, 5).Select(i => Path.Combine(dir, $"data_batch_{i}.bin")).ToArray(), [Path.Combine(dir, "test_batch.bin")]);
}
