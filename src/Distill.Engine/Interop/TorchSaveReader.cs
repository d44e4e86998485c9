using System.Buffers.Binary;
using System.IO.Compression;
using System.Numerics;
using static TorchSharp.torch;

namespace Distill.Engine.Interop;

/// <summary>
/// Reads files written by torch.save: the zip format (PyTorch 1.6 and later) and the legacy one
/// (five pickles, then the raw storages). The pickled object comes back as the restricted
/// unpickler's values; tensors are read from their storages only when asked for, after a bounds
/// check of their view, so that a checkpoint's optimiser state is never loaded.
/// </summary>
public sealed class TorchSaveReader : IDisposable
{
    private static readonly BigInteger LegacyMagic = BigInteger.Parse("01950a86a20f9469cfc6c", System.Globalization.NumberStyles.HexNumber);

    /// <summary>
    /// Whether the bytes begin with the legacy format's first pickle, its magic number, in any of
    /// the pickle protocols torch.save writes with (its pickle_protocol: 2 by default, 1 to 5).
    /// </summary>
    public static bool IsLegacy(ReadOnlySpan<byte> head)
    {
        if (head.Length == 0 || head[0] is not (0x80 or (byte)'L')) return false;
        try { return RestrictedUnpickler.Load(head.ToArray(), "", _ => throw new WeightFileException("", "a storage"), 0, out _) is BigInteger m && m == LegacyMagic; }
        catch (WeightFileException) { return false; }
    }

    private readonly string path;
    private readonly ZipArchive? zip;
    private readonly string prefix = "";
    private readonly byte[]? legacy;                                   // the whole legacy file
    private readonly Dictionary<string, long> legacyData = [];         // storage key -> offset of its bytes in the file
    private readonly Dictionary<string, StorageRef> storages = [];
    private readonly Dictionary<string, Tensor> loaded = [];

    public object? Root { get; }
    public string Format { get; }

    private TorchSaveReader(string path, bool isZip)
    {
        this.path = path;
        if (isZip)
        {
            Format = "PyTorch zip";
            try { zip = new ZipArchive(File.OpenRead(path), ZipArchiveMode.Read); }
            catch (InvalidDataException e) { throw Bad($"not a readable zip archive (truncated or damaged): {e.Message}", e); }
            var pickles = zip.Entries.Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal) && e.FullName.Count(c => c == '/') == 1).ToList();
            if (pickles.Count != 1)
                throw Bad(pickles.Count == 0 ? "a zip archive without the data.pkl record torch.save writes" : "a zip archive with more than one data.pkl record");
            prefix = pickles[0].FullName[..^"data.pkl".Length];
            if (zip.GetEntry(prefix + "byteorder") is { } order && ReadSmall(order).Trim() is var o && o != "little")
                throw Bad($"written on a '{o}'-endian machine; only little-endian files are read");
            if (pickles[0].Length > RestrictedUnpickler.MaxPickleBytes) throw Bad($"a data.pkl of {pickles[0].Length:N0} bytes");
            var pickle = ReadAll(pickles[0]);
            Root = RestrictedUnpickler.Load(pickle, path, ZipStorage);
        }
        else
        {
            Format = "PyTorch legacy";
            var length = new FileInfo(path).Length;
            if (length > int.MaxValue) throw Bad("a legacy-format file over 2 GB; re-save it with torch.save's default (zip) format");
            legacy = File.ReadAllBytes(path);
            var magic = RestrictedUnpickler.Load(legacy, path, NoStorage, 0, out var at);
            if (magic is not BigInteger m || m != LegacyMagic) throw Bad("does not start with torch.save's legacy magic number");
            var version = RestrictedUnpickler.Load(legacy, path, NoStorage, at, out at);
            if (version is not 1001L) throw Bad($"legacy protocol version {version}, not 1001");
            var sysInfo = RestrictedUnpickler.Load(legacy, path, NoStorage, at, out at) as PyDict;
            if (sysInfo is null || !sysInfo.TryGetValue("little_endian", out var little) || little is not true)
                throw Bad("written on a big-endian machine (or without its system information); only little-endian files are read");
            Root = RestrictedUnpickler.Load(legacy, path, LegacyStorage, at, out at);
            var keys = RestrictedUnpickler.Load(legacy, path, NoStorage, at, out at) as List<object?>
                ?? throw Bad("the list of storage keys after the object is missing");
            long offset = at;
            foreach (var k in keys)
            {
                if (k is not string key || !storages.TryGetValue(key, out var s)) throw Bad($"storage key {k} is not one the object uses");
                if (offset + 8 > legacy.Length) throw Bad($"storage '{key}' is cut off (truncated)");
                var numel = BinaryPrimitives.ReadInt64LittleEndian(legacy.AsSpan((int)offset, 8));
                if (numel != s.Numel) throw Bad($"storage '{key}' holds {numel} elements where the object says {s.Numel}");
                offset += 8;
                legacyData[key] = offset;
                offset = checked(offset + s.Numel * ElementTypes.Size(s.DType));
                if (offset > legacy.Length) throw Bad($"storage '{key}' is cut off (truncated)");
            }
            if (storages.Keys.FirstOrDefault(k => !legacyData.ContainsKey(k)) is { } lost) throw Bad($"storage '{lost}' has no data");
        }
    }

    /// <summary>Opens a torch.save file (zip or legacy; the caller has looked at its first bytes).</summary>
    public static TorchSaveReader Open(string path, bool isZip) => new(path, isZip);

    private WeightFileException Bad(string problem, Exception? inner = null) => new(path, problem, inner);

    private StorageRef NoStorage(object?[] pid) => throw Bad("a tensor where the legacy format's header has none");

    private (ScalarType DType, string Key, long Numel) Pid(object?[] pid, int length)
    {
        if (pid.Length != length || pid[0] is not "storage")
            throw Bad($"a persistent id ({pid.Length} items) that is not a ('storage', type, key, location, size{(length == 6 ? ", view" : "")}) tuple");
        if (pid[1] is not PyGlobal { Module: "torch" } g || ElementTypes.OfStorage(g.Name) is not { Scalar: var dtype })
            throw Bad($"storage type {pid[1]} is not one of torch's tensor storages");
        if (pid[2] is not string key) throw Bad("a storage key that is not a string");
        if (pid[4] is not long numel || numel < 0) throw Bad($"storage '{key}' has size {pid[4]}");
        return (dtype, key, numel);
    }

    private StorageRef Remember(ScalarType dtype, string key, long numel)
    {
        if (storages.TryGetValue(key, out var known))
            return known.DType == dtype && known.Numel == numel ? known : throw Bad($"storage '{key}' is described twice, differently");
        return storages[key] = new StorageRef(key, dtype, numel);
    }

    private StorageRef ZipStorage(object?[] pid)
    {
        var (dtype, key, numel) = Pid(pid, 5);
        if (storages.TryGetValue(key, out var known)) return Remember(dtype, key, numel);
        var entry = zip!.GetEntry($"{prefix}data/{key}") ?? throw Bad($"the record of storage '{key}' (data/{key}) is missing");
        var bytes = checked(numel * ElementTypes.Size(dtype));
        if (entry.Length != bytes)
            throw Bad($"storage '{key}' should hold {numel} {dtype} elements ({bytes:N0} bytes); its record has {entry.Length:N0}");
        return Remember(dtype, key, numel);
    }

    private StorageRef LegacyStorage(object?[] pid)
    {
        var (dtype, key, numel) = Pid(pid, 6);
        if (pid[5] is not null) throw Bad($"storage '{key}' is a view of another storage, which only pre-1.0 PyTorch wrote");
        return Remember(dtype, key, numel);
    }

    /// <summary>The tensor a reference describes, as a new contiguous CPU tensor of the stored dtype.</summary>
    public Tensor Materialize(TensorRef t)
    {
        if (!storages.TryGetValue(t.Storage.Key, out var s) || !ReferenceEquals(s, t.Storage)) throw Bad("a tensor of a storage this file does not describe");
        if (t.Size.Length != t.Stride.Length) throw Bad($"a tensor with {t.Size.Length} sizes and {t.Stride.Length} strides");
        if (t.Offset < 0 || t.Size.Any(d => d < 0) || t.Stride.Any(d => d < 0)) throw Bad("a tensor with a negative size, stride or offset");
        var numel = t.Numel;
        if (numel > 0)
        {
            var last = t.Offset;
            for (var k = 0; k < t.Size.Length; k++) last = checked(last + (t.Size[k] - 1) * t.Stride[k]);
            if (last >= s.Numel) throw Bad($"a tensor of shape {t.ShapeText} reaches element {last} of storage '{s.Key}', which has {s.Numel}");
        }
        var storage = Storage(s);
        using var view = storage.as_strided(t.Size, t.Stride, t.Offset);
        using var dense = view.contiguous();
        return dense.clone();
    }

    private Tensor Storage(StorageRef s)
    {
        if (loaded.TryGetValue(s.Key, out var t)) return t;
        t = empty([s.Numel], s.DType);
        if (s.Numel > 0)
        {
            if (zip is not null)
            {
                try
                {
                    var entry = zip.GetEntry($"{prefix}data/{s.Key}")!;
                    using (var data = entry.Open()) t.ReadBytesFromStream(data, 1 << 16);
                    CheckCrc(entry, t.bytes);
                }
                catch (Exception e) when (e is InvalidDataException or EndOfStreamException)
                {
                    t.Dispose();
                    throw Bad($"the record of storage '{s.Key}' cannot be read (truncated or damaged): {e.Message}", e);
                }
            }
            else t.bytes = legacy.AsSpan((int)legacyData[s.Key], checked((int)(s.Numel * ElementTypes.Size(s.DType))));
        }
        loaded[s.Key] = t;
        return t;
    }

    private byte[] ReadAll(ZipArchiveEntry entry)
    {
        try
        {
            using var s = entry.Open();
            var bytes = new byte[entry.Length];
            s.ReadExactly(bytes);
            CheckCrc(entry, bytes);
            return bytes;
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException)
        {
            throw Bad($"the record {entry.FullName} cannot be read (truncated or damaged): {e.Message}", e);
        }
    }

    /// <summary>
    /// A record's bytes against the CRC-32 its zip header carries, which System.IO.Compression does
    /// not compare on read: a damaged record is refused rather than loaded as weights.
    /// </summary>
    private static void CheckCrc(ZipArchiveEntry entry, ReadOnlySpan<byte> bytes)
    {
        var crc = System.IO.Hashing.Crc32.HashToUInt32(bytes);
        if (crc != entry.Crc32)
            throw new InvalidDataException($"its bytes' CRC-32 is {crc:x8}, its header says {entry.Crc32:x8}");
    }

    private string ReadSmall(ZipArchiveEntry entry) =>
        entry.Length > 64 ? "?" : System.Text.Encoding.ASCII.GetString(ReadAll(entry));

    public void Dispose()
    {
        foreach (var t in loaded.Values) t.Dispose();
        loaded.Clear();
        zip?.Dispose();
    }
}
