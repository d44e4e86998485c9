using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using static TorchSharp.torch;

namespace Distill.Engine.Interop;

/// <summary>
/// Writes a state_dict as torch.save does (zip format): data.pkl, a protocol-2 pickle of an
/// OrderedDict of tensors rebuilt by torch._utils._rebuild_tensor_v2 from storages in data/N,
/// stored uncompressed, with version and byteorder records. Only globals that
/// torch.load(weights_only=True) accepts are written. Written to a temporary file and renamed.
/// </summary>
public static class TorchSaveWriter
{
    public static void Write(string path, IReadOnlyList<RawTensor> tensors)
    {
        var folder = "archive/";
        var tmp = path + ".tmp";
        using (var fs = File.Create(tmp))
        using (var zip = new ZipArchive(fs, ZipArchiveMode.Create))
        {
            var pickle = new PickleWriter();
            pickle.Proto();
            pickle.Global("collections", "OrderedDict");
            pickle.EmptyTuple();
            pickle.Reduce();
            pickle.Mark();
            for (var k = 0; k < tensors.Count; k++)
            {
                var t = tensors[k];
                pickle.Unicode(t.Name);
                pickle.Global("torch._utils", "_rebuild_tensor_v2");
                pickle.Mark();
                pickle.Mark();                                            // the persistent id
                pickle.Unicode("storage");
                pickle.Global("torch", StorageName(t.DType));
                pickle.Unicode(k.ToString(System.Globalization.CultureInfo.InvariantCulture));
                pickle.Unicode("cpu");
                pickle.Int(t.Shape.Aggregate(1L, (a, d) => a * d));
                pickle.Tuple();
                pickle.PersistentId();
                pickle.Int(0);                                            // storage offset
                pickle.Ints(t.Shape);
                pickle.Ints(Strides(t.Shape));
                pickle.Bool(false);                                       // requires_grad
                pickle.Global("collections", "OrderedDict");              // backward hooks
                pickle.EmptyTuple();
                pickle.Reduce();
                pickle.Tuple();
                pickle.Reduce();
                Put(zip, $"{folder}data/{k}", t.Data);
            }
            pickle.SetItems();
            pickle.Stop();
            Put(zip, folder + "data.pkl", pickle.ToArray());
            Put(zip, folder + "byteorder", "little"u8.ToArray());
            Put(zip, folder + "version", "3\n"u8.ToArray());
        }
        File.Move(tmp, path, overwrite: true);
    }

    private static void Put(ZipArchive zip, string name, byte[] bytes)
    {
        var entry = zip.CreateEntry(name, CompressionLevel.NoCompression);
        entry.LastWriteTime = FixedTime;   // the same tensors give the same file
        using var s = entry.Open();
        s.Write(bytes);
    }

    private static readonly DateTimeOffset FixedTime = new(2000, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private static long[] Strides(long[] shape)
    {
        var strides = new long[shape.Length];
        long s = 1;
        for (var d = shape.Length - 1; d >= 0; d--)
        {
            strides[d] = s;
            s *= Math.Max(1, shape[d]);
        }
        return strides;
    }

    private static string StorageName(ScalarType t) =>
        ElementTypes.Of(t)?.Storage ?? throw new ArgumentException($"{t} is not a type weight files hold");

    /// <summary>The protocol-2 opcodes a state_dict needs.</summary>
    private sealed class PickleWriter
    {
        private readonly MemoryStream s = new();

        public void Proto() { s.WriteByte(0x80); s.WriteByte(2); }
        public void Stop() => s.WriteByte((byte)'.');
        public void Mark() => s.WriteByte((byte)'(');
        public void Tuple() => s.WriteByte((byte)'t');
        public void EmptyTuple() => s.WriteByte((byte)')');
        public void Reduce() => s.WriteByte((byte)'R');
        public void SetItems() => s.WriteByte((byte)'u');
        public void PersistentId() => s.WriteByte((byte)'Q');
        public void Bool(bool b) => s.WriteByte(b ? (byte)0x88 : (byte)0x89);

        public void Global(string module, string name) => s.Write(Encoding.ASCII.GetBytes($"c{module}\n{name}\n"));

        public void Unicode(string text)
        {
            var bytes = Encoding.UTF8.GetBytes(text);
            Span<byte> n = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(n, (uint)bytes.Length);
            s.WriteByte((byte)'X');
            s.Write(n);
            s.Write(bytes);
        }

        public void Int(long v)
        {
            if (v is >= 0 and < 256) { s.WriteByte((byte)'K'); s.WriteByte((byte)v); return; }
            if (v is >= int.MinValue and <= int.MaxValue)
            {
                Span<byte> b = stackalloc byte[4];
                BinaryPrimitives.WriteInt32LittleEndian(b, (int)v);
                s.WriteByte((byte)'J');
                s.Write(b);
                return;
            }
            Span<byte> l = stackalloc byte[8];                            // LONG1, 8 bytes two's complement
            BinaryPrimitives.WriteInt64LittleEndian(l, v);
            s.WriteByte(0x8a);
            s.WriteByte(8);
            s.Write(l);
        }

        public void Ints(long[] values)
        {
            Mark();
            foreach (var v in values) Int(v);
            Tuple();
        }

        public byte[] ToArray() => s.ToArray();
    }
}
