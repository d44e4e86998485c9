using TorchSharp;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>Helpers that write modules, tensors and generators into one checkpoint stream.</summary>
internal static class StateIo
{
    public static void WriteModule(BinaryWriter w, nn.Module m)
    {
        using var ms = new MemoryStream();
        m.save(ms);
        WriteBytes(w, ms.ToArray());
    }

    public static void ReadModule(BinaryReader r, nn.Module m)
    {
        Models.ModuleState.Load(m, ReadBytes(r));
    }

    public static void WriteTensor(BinaryWriter w, Tensor t)
    {
        using var cpu = t.detach().cpu().contiguous();
        w.Write((int)cpu.dtype);
        w.Write((int)cpu.dim());
        foreach (var d in cpu.shape) w.Write(d);
        WriteBytes(w, cpu.bytes.ToArray());
    }

    public static Tensor ReadTensor(BinaryReader r)
    {
        var dtype = (ScalarType)r.ReadInt32();
        var dims = r.ReadInt32();
        var shape = new long[dims];
        for (var i = 0; i < dims; i++) shape[i] = r.ReadInt64();
        var bytes = ReadBytes(r);
        var t = empty(shape, dtype);
        t.bytes = bytes;
        return t;
    }

    public static void WriteGenerator(BinaryWriter w, Generator g)
    {
        using var s = g.get_state();
        WriteTensor(w, s);
    }

    public static void ReadGenerator(BinaryReader r, Generator g)
    {
        using var s = ReadTensor(r);
        g.set_state(s);
    }

    public static void WriteBytes(BinaryWriter w, byte[] b)
    {
        w.Write(b.Length);
        w.Write(b);
    }

    public static byte[] ReadBytes(BinaryReader r)
    {
        var n = r.ReadInt32();
        if (n < 0) throw new InvalidDataException($"corrupt checkpoint: negative block length {n}");
        var b = r.ReadBytes(n);
        if (b.Length != n) throw new InvalidDataException($"corrupt checkpoint: block of {n} bytes is truncated at {b.Length}");
        return b;
    }

    public static void Tag(BinaryWriter w, string tag) => w.Write(tag);

    public static void Expect(BinaryReader r, string tag)
    {
        var got = r.ReadString();
        if (got != tag) throw new InvalidDataException($"checkpoint section '{got}' found where '{tag}' was expected (a checkpoint of another method or version)");
    }
}
