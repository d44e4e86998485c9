using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using static TorchSharp.torch;

namespace Distill.Engine.Interop;

/// <summary>
/// The safetensors format (8-byte little-endian header length, a JSON header of name -> dtype,
/// shape and data_offsets, then the bytes), read with every check of the reference reader made
/// before anything is allocated: header inside the file, offsets contiguous from 0 with no hole or
/// overlap, each span the size its dtype and shape need, the file covered exactly.
/// </summary>
public static class Safetensors
{
    public const long MaxHeaderBytes = 100_000_000;

    public sealed record Entry(string Name, ScalarType DType, long[] Shape, long Begin, long End);

    /// <summary>The header's tensors in file order, and where the data begins.</summary>
    public static (IReadOnlyList<Entry> Entries, long DataStart) ReadHeader(Stream fs, string path)
    {
        WeightFileException Bad(string problem, Exception? inner = null) => new(path, $"safetensors: {problem}", inner);
        var length = fs.Length;
        if (length < 8) throw Bad($"{length} bytes, shorter than the 8-byte header length");
        Span<byte> n8 = stackalloc byte[8];
        fs.Position = 0;
        fs.ReadExactly(n8);
        var n = BinaryPrimitives.ReadUInt64LittleEndian(n8);
        if (n > MaxHeaderBytes) throw Bad($"a header length of {n:N0} bytes, over the {MaxHeaderBytes:N0}-byte limit");
        if ((long)n > length - 8) throw Bad($"the header length ({n:N0} bytes) runs past the end of the {length:N0}-byte file (truncated?)");
        var header = new byte[n];
        fs.ReadExactly(header);
        if (n == 0 || header[0] != (byte)'{') throw Bad("the header does not start with '{'");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 8 }); }
        catch (JsonException e) { throw Bad($"the header is not valid JSON: {e.Message}", e); }
        var entries = new List<Entry>();
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad("the header is not a JSON object");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(p.Name)) throw Bad($"tensor '{p.Name}' is listed twice");
                if (p.Name == "__metadata__")
                {
                    if (p.Value.ValueKind != JsonValueKind.Object || p.Value.EnumerateObject().Any(m => m.Value.ValueKind != JsonValueKind.String))
                        throw Bad("__metadata__ is not a map of strings");
                    continue;
                }
                entries.Add(ReadEntry(p, Bad));
            }
        }
        entries.Sort((a, b) => a.Begin.CompareTo(b.Begin));
        long expect = 0;
        foreach (var e in entries)
        {
            if (e.Begin != expect)
                throw Bad($"tensor '{e.Name}' starts at byte {e.Begin} of the data where {expect} was expected ({(e.Begin > expect ? "a hole" : "an overlap")})");
            expect = e.End;
        }
        var dataStart = 8 + (long)n;
        if (dataStart + expect != length)
            throw Bad($"the header describes {expect:N0} bytes of data but the file has {length - dataStart:N0}{(dataStart + expect > length ? " (truncated?)" : "")}");
        return (entries, dataStart);
    }

    private static Entry ReadEntry(JsonProperty p, Func<string, Exception?, WeightFileException> bad)
    {
        WeightFileException Bad(string problem) => bad($"tensor '{p.Name}': {problem}", null);
        if (p.Value.ValueKind != JsonValueKind.Object) throw Bad("not an object");
        if (!p.Value.TryGetProperty("dtype", out var d) || d.ValueKind != JsonValueKind.String) throw Bad("no dtype");
        var name = d.GetString()!;
        if (ElementTypes.OfSafetensors(name) is not { Scalar: var dtype }) throw Bad($"dtype {name} is not one TorchSharp holds ({string.Join(", ", ElementTypes.All.Select(t => t.SafetensorsCode))})");
        if (!p.Value.TryGetProperty("shape", out var s) || s.ValueKind != JsonValueKind.Array) throw Bad("no shape");
        if (!p.Value.TryGetProperty("data_offsets", out var o) || o.ValueKind != JsonValueKind.Array || o.GetArrayLength() != 2) throw Bad("no [begin, end] data_offsets");
        var shape = s.EnumerateArray().Select(e => e.TryGetInt64(out var v) && v >= 0 ? v : throw Bad($"shape {s} is not a list of sizes")).ToArray();
        var offsets = o.EnumerateArray().Select(e => e.TryGetInt64(out var v) && v >= 0 ? v : throw Bad($"data_offsets {o} are not byte offsets")).ToArray();
        if (offsets[1] < offsets[0]) throw Bad($"data_offsets {o} end before they begin");
        long bytes;
        try { bytes = checked(shape.Aggregate(1L, (a, x) => checked(a * x)) * ElementTypes.Size(dtype)); }
        catch (OverflowException) { throw Bad($"shape {s} overflows"); }
        if (offsets[1] - offsets[0] != bytes)
            throw Bad($"data_offsets {o} span {offsets[1] - offsets[0]:N0} bytes where {name} {s} needs {bytes:N0}");
        return new Entry(p.Name, dtype, shape, offsets[0], offsets[1]);
    }

    /// <summary>One tensor's bytes.</summary>
    public static byte[] ReadRaw(Stream fs, long dataStart, Entry e)
    {
        var bytes = new byte[checked((int)(e.End - e.Begin))];
        fs.Position = dataStart + e.Begin;
        fs.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>One tensor of a checked header, as a new CPU tensor.</summary>
    public static Tensor Read(Stream fs, long dataStart, Entry e)
    {
        var t = empty(e.Shape, e.DType);
        if (e.End > e.Begin)
        {
            fs.Position = dataStart + e.Begin;
            t.ReadBytesFromStream(fs, 1 << 16);
        }
        return t;
    }

    /// <summary>
    /// Writes tensors as safetensors (names sorted, as the reference writer does; header padded with
    /// spaces to 8 bytes; metadata format=pt), through a temporary file renamed into place.
    /// </summary>
    public static void Write(string path, IReadOnlyList<RawTensor> tensors)
    {
        var sorted = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var header = new StringBuilder("{\"__metadata__\":{\"format\":\"pt\"}");
        long offset = 0;
        foreach (var t in sorted)
        {
            var code = ElementTypes.Of(t.DType)?.SafetensorsCode ?? throw new ArgumentException($"{t.Name}: {t.DType} is not a type safetensors holds");
            header.Append(',').Append(JsonSerializer.Serialize(t.Name)).Append(":{\"dtype\":\"").Append(code)
                .Append("\",\"shape\":[").Append(string.Join(',', t.Shape)).Append("],\"data_offsets\":[")
                .Append(offset).Append(',').Append(offset + t.Data.Length).Append("]}");
            offset += t.Data.Length;
        }
        header.Append('}');
        while ((header.Length + 8) % 8 != 0) header.Append(' ');
        var headerBytes = Encoding.UTF8.GetBytes(header.ToString());
        var tmp = path + ".tmp";
        using (var fs = File.Create(tmp))
        {
            Span<byte> n8 = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(n8, (ulong)headerBytes.Length);
            fs.Write(n8);
            fs.Write(headerBytes);
            foreach (var t in sorted) fs.Write(t.Data);
        }
        File.Move(tmp, path, overwrite: true);
    }
}
