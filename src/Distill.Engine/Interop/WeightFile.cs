using System.Text;
using static TorchSharp.torch;

namespace Distill.Engine.Interop;

/// <summary>One named tensor of a weights file, read only when asked for.</summary>
public sealed record WeightEntry(string Name, ScalarType DType, long[] Shape, Func<Tensor> Read, Func<byte[]>? ReadRaw = null)
{
    public string ShapeText => $"[{string.Join(", ", Shape)}]";
}

/// <summary>
/// A weights file opened by its content, whatever its name: a torch.save file (zip or legacy) of a
/// state_dict or of a checkpoint dict holding one, safetensors, or the engine's own (TorchSharp)
/// format. <see cref="Entries"/> are the state_dict's tensors in file order.
/// </summary>
public sealed class WeightFile : IDisposable
{
    /// <summary>Where checkpoints of the data-free repositories and PyTorch's tutorials keep the weights, tried in this order.</summary>
    public static readonly IReadOnlyList<string> CheckpointKeys = ["state_dict", "model", "net", "model_state_dict", "student", "teacher"];

    private readonly IDisposable? owner;

    public string Path { get; }
    public string Format { get; }
    /// <summary>The checkpoint dict's key the weights came from; null for a bare state_dict.</summary>
    public string? Key { get; }
    public IReadOnlyList<WeightEntry> Entries { get; }

    private WeightFile(string path, string format, string? key, IReadOnlyList<WeightEntry> entries, IDisposable? owner)
    {
        Path = path;
        Format = format;
        Key = key;
        Entries = entries;
        this.owner = owner;
    }

    public static WeightFile Open(string path, string? key = null) => Sniff(path) switch
    {
        Content.TorchZip => FromTorch(TorchSaveReader.Open(path, isZip: true), path, key),
        Content.TorchLegacy => FromTorch(TorchSaveReader.Open(path, isZip: false), path, key),
        Content.Safetensors => FromSafetensors(path, key),
        _ => FromEngine(path, key),
    };

    /// <summary>Whether the file is in ClusterDistill's own format, the bytes a teacher blob holds (false for anything else or unreadable).</summary>
    public static bool IsEngineFile(string path)
    {
        try { return Sniff(path) == Content.Engine; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    private enum Content { TorchZip, TorchLegacy, Safetensors, Engine }

    /// <summary>What the file holds, by its first bytes; a file that holds no weights is named.</summary>
    private static Content Sniff(string path)
    {
        if (!File.Exists(path)) throw new WeightFileException(path, Directory.Exists(path) ? "a folder, not a weights file" : "no such file");
        // a pipe or a device has no size: refused before it is opened (opening a pipe waits for a writer)
        if (new FileInfo(path).Length == 0) throw new WeightFileException(path, "the file is empty (or not a regular file)");
        var head = new byte[300];
        int n;
        using (var fs = File.OpenRead(path)) n = fs.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        var bytes = head.AsSpan(0, n);
        if (n == 0) throw new WeightFileException(path, "the file is empty");   // emptied since its size was read
        if (bytes.StartsWith("PK\x03\x04"u8)) return Content.TorchZip;
        if (TorchSaveReader.IsLegacy(bytes)) return Content.TorchLegacy;
        if (bytes.StartsWith("version https://git-lfs"u8)) throw new WeightFileException(path, "a Git LFS pointer, not the weights: fetch them with git lfs pull");
        if (n > 262 && bytes[257..262].SequenceEqual("ustar"u8)) throw new WeightFileException(path, "a tar archive: the format of PyTorch before 0.4, which is not read; re-save it with a recent torch.save");
        if (n >= 9 && bytes[8] == (byte)'{') return Content.Safetensors;
        if (LooksLikeMarkup(bytes)) throw new WeightFileException(path, "text that looks like an HTML page (a failed download?), not weights");
        if (EngineFormat.Looks(bytes)) return Content.Engine;
        if (bytes.StartsWith("PK"u8)) throw new WeightFileException(path, "not a readable zip archive (damaged)");
        if (bytes[0] == 0x80) throw new WeightFileException(path, "a bare pickle, not a torch.save file; save with torch.save(model.state_dict(), path)");
        throw new WeightFileException(path, "not a PyTorch (torch.save), safetensors or ClusterDistill weights file");
    }

    /// <summary>An HTML or XML page (a login page or a 404 saved instead of the file): after any blanks, '&lt;' and a tag's letter, '!' or '?'.</summary>
    private static bool LooksLikeMarkup(ReadOnlySpan<byte> bytes)
    {
        var text = bytes.TrimStart(" \t\r\n\uFEFF"u8);   // (the byte-order mark's three bytes among them)
        return text.Length >= 2 && text[0] == (byte)'<' && (char.IsAsciiLetter((char)text[1]) || text[1] is (byte)'!' or (byte)'?');
    }

    private static WeightFile FromTorch(TorchSaveReader reader, string path, string? key)
    {
        try
        {
            var (chosen, dict) = Select(reader.Root, path, key);
            var entries = new List<WeightEntry>();
            foreach (var (k, v) in dict)
            {
                if (k is not string name) throw new WeightFileException(path, $"the state_dict{Where(chosen)} has a key {k} that is not a string");
                if (v is not TensorRef t) throw new WeightFileException(path, $"'{name}' in the state_dict{Where(chosen)} is {Kind(v)}, not a tensor");
                entries.Add(new WeightEntry(name, t.Storage.DType, t.Size, () => reader.Materialize(t)));
            }
            return new WeightFile(path, reader.Format, chosen, entries, reader);
        }
        catch
        {
            reader.Dispose();
            throw;
        }
    }

    private static string Where(string? key) => key is null ? "" : $" (under '{key}')";

    /// <summary>The dict of tensors: the top level when it is one, else the named or the first known checkpoint key.</summary>
    private static (string? Key, PyDict Dict) Select(object? root, string path, string? key)
    {
        if (root is not PyDict top) throw new WeightFileException(path, $"holds {Kind(root)}, not a state_dict or a checkpoint dict");
        // mostly tensors: a stray value in a state_dict is then named by the caller, and a
        // checkpoint dict (an epoch, an optimizer and one state_dict) is not taken for one
        static bool IsStateDict(PyDict d) => d.Count(kv => kv.Value is TensorRef) * 2 > d.Count;
        if (key is not null)
        {
            // a key of the checkpoint, or a path of keys into nested dicts ("state_dict.model")
            object? v = top;
            var at = "";
            foreach (var part in top.TryGetValue(key, out _) ? [key] : key.Split('.'))
            {
                if (v is not PyDict d) throw new WeightFileException(path, $"'{at}' holds {Kind(v)}, not a dict with a key '{part}' (checkpoint_key {key})");
                if (!d.TryGetValue(part, out var next))
                    throw new WeightFileException(path, at.Length == 0
                        ? $"no key '{key}' in the checkpoint; it has {Describe(top)}"
                        : $"no key '{part}' under '{at}' (checkpoint_key {key}); it has {Describe(d)}");
                v = next;
                at = at.Length == 0 ? part : $"{at}.{part}";
            }
            return v is PyDict found && IsStateDict(found) ? (key, found)
                : throw new WeightFileException(path, $"'{key}' holds {Kind(v)}{(v is PyDict inner ? $" ({Describe(inner)}; a deeper key is given as checkpoint_key: {key}.NAME)" : "")}, not a state_dict of tensors");
        }
        if (IsStateDict(top)) return (null, top);
        foreach (var k in CheckpointKeys)
            if (top.TryGetValue(k, out var v) && v is PyDict d && IsStateDict(d)) return (k, d);
        throw new WeightFileException(path, $"neither a state_dict nor a checkpoint with one under {string.Join(", ", CheckpointKeys)}: it has {Describe(top)}; say which key holds the weights (checkpoint_key)");
    }

    private static string Describe(PyDict d) =>
        d.Count == 0 ? "no keys" : string.Join(", ", d.Take(12).Select(kv => $"{kv.Key}: {Kind(kv.Value)}")) + (d.Count > 12 ? $" and {d.Count - 12} more" : "");

    private static string Kind(object? v) => v switch
    {
        null => "None",
        TensorRef t => $"a tensor {t.ShapeText}",
        PyDict d => $"a dict of {d.Count}",
        List<object?> l => $"a list of {l.Count}",
        object?[] t => $"a tuple of {t.Length}",
        string => "a string",
        long or System.Numerics.BigInteger => "an integer",
        double => "a number",
        bool => "a bool",
        byte[] => "bytes",
        _ => v.GetType().Name,
    };

    private static WeightFile FromSafetensors(string path, string? key)
    {
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        try
        {
            var (entries, dataStart) = Safetensors.ReadHeader(fs, path);
            if (key is not null)
            {
                // "model" and "model." name the same prefix
                var prefix = key.TrimEnd('.') + ".";
                entries = entries.Where(e => e.Name.StartsWith(prefix, StringComparison.Ordinal))
                    .Select(e => e with { Name = e.Name[prefix.Length..] }).ToList();
                if (entries.Count == 0) throw new WeightFileException(path, $"no tensor of the safetensors file begins with '{prefix}' (checkpoint_key)");
            }
            // file order is offset order: sequential reads
            var list = entries.Select(e => new WeightEntry(e.Name, e.DType, e.Shape, () => Safetensors.Read(fs, dataStart, e), () => Safetensors.ReadRaw(fs, dataStart, e))).ToList();
            return new WeightFile(path, "safetensors", key, list, fs);
        }
        catch
        {
            fs.Dispose();
            throw;
        }
    }

    private static WeightFile FromEngine(string path, string? key)
    {
        if (key is not null) throw new WeightFileException(path, "checkpoint_key applies to PyTorch checkpoints; this is a ClusterDistill weights file");
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        try { return new WeightFile(path, "ClusterDistill", null, EngineFormat.Read(fs, path), fs); }
        catch
        {
            fs.Dispose();
            throw;
        }
    }

    public void Dispose() => owner?.Dispose();

    /// <summary>TorchSharp's Module.save: LEB128 count, then per tensor a .NET string name, LEB128 dtype, rank, sizes, raw bytes.</summary>
    private static class EngineFormat
    {
        public static bool Looks(ReadOnlySpan<byte> b)
        {
            var i = 0;
            if (!Leb(b, ref i, out var count) || count is < 1 or > 1_000_000) return false;
            if (!Leb(b, ref i, out var len) || len is < 1 or > 200 || i + len > b.Length) return false;
            for (var j = i; j < i + len; j++) if (b[j] is < 0x20 or > 0x7e) return false;
            i += (int)len;
            // then the first tensor's element type and rank
            return Leb(b, ref i, out var dtype) && dtype is >= 0 and <= 15 && Leb(b, ref i, out var rank) && rank is >= 0 and <= 8;
        }

        private static bool Leb(ReadOnlySpan<byte> b, ref int i, out long v)
        {
            v = 0;
            for (var shift = 0; shift < 63; shift += 7)
            {
                if (i >= b.Length) return false;
                var x = b[i++];
                v |= (long)(x & 0x7f) << shift;
                if ((x & 0x80) == 0) return true;
            }
            return false;
        }

        public static List<WeightEntry> Read(FileStream fs, string path)
        {
            using var r = new BinaryReader(fs, Encoding.UTF8, leaveOpen: true);
            var entries = new List<WeightEntry>();
            try
            {
                var count = Models.ModuleState.ReadLength(r);
                for (long k = 0; k < count; k++)
                {
                    var name = r.ReadString();
                    var dtype = (ScalarType)Models.ModuleState.ReadLength(r);
                    int size;
                    try { size = ElementTypes.Size(dtype); }
                    catch (ArgumentException) { throw new WeightFileException(path, $"'{name}' has element type {(int)dtype}, which is not one a model uses"); }
                    var rank = Models.ModuleState.ReadLength(r);
                    if (rank > 8) throw new WeightFileException(path, $"'{name}' has {rank} dimensions");
                    var shape = new long[rank];
                    for (var d = 0; d < rank; d++) shape[d] = Models.ModuleState.ReadLength(r);
                    var bytes = checked(shape.Aggregate(1L, (a, x) => checked(a * x)) * size);
                    var at = fs.Position;
                    if (at + bytes > fs.Length) throw new WeightFileException(path, $"'{name}' is cut off (truncated)");
                    entries.Add(new WeightEntry(name, dtype, shape, () =>
                    {
                        var t = empty(shape, dtype);
                        fs.Position = at;
                        if (bytes > 0) t.ReadBytesFromStream(fs, 1 << 16);
                        return t;
                    }, () =>
                    {
                        var raw = new byte[bytes];
                        fs.Position = at;
                        fs.ReadExactly(raw);
                        return raw;
                    }));
                    fs.Position = at + bytes;
                }
            }
            catch (Exception e) when (e is EndOfStreamException or OverflowException or InvalidDataException)
            {
                throw new WeightFileException(path, $"a damaged ClusterDistill weights file ({e.Message})", e);
            }
            if (fs.Position != fs.Length) throw new WeightFileException(path, $"{fs.Length - fs.Position} bytes after the last tensor");
            return entries;
        }
    }
}
