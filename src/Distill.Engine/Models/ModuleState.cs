using static TorchSharp.torch;

namespace Distill.Engine.Models;

/// <summary>
/// Loads weights written by TorchSharp's nn.Module.save into the module's own tensors, in place, on
/// any device. TorchSharp's Module.load moves a CUDA module to the CPU and back, which replaces every
/// parameter with a new tensor and disposes the old one: an optimizer built on the module then holds
/// disposed tensors (a rollback or a resume on a GPU failed with "Tensor invalid -- empty handle"),
/// and BatchNorm hooks or anything else that kept a parameter would see stale ones.
/// </summary>
public static class ModuleState
{
    public static void Load(nn.Module module, byte[] weights)
    {
        using var ms = new MemoryStream(weights, writable: false);
        Load(module, ms);
    }

    public static void Load(nn.Module module, string path)
    {
        using var fs = File.OpenRead(path);
        Load(module, fs);
    }

    /// <summary>Every entry of the module's state_dict must be in the stream, with its dtype and shape, and nothing else.</summary>
    public static void Load(nn.Module module, Stream stream)
    {
        using var r = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        var state = module.state_dict();
        var count = ReadLength(r);
        if (count != state.Count)
            throw new InvalidDataException($"the weights hold {count} tensors where this {module.GetType().Name} has {state.Count}: another architecture");
        var seen = new HashSet<string>();
        using var _ = no_grad();
        for (long i = 0; i < count; i++)
        {
            var name = r.ReadString();
            if (!state.TryGetValue(name, out var target))
                throw new InvalidDataException($"the weights hold '{name}', which this {module.GetType().Name} does not have: another architecture");
            if (!seen.Add(name)) throw new InvalidDataException($"the weights hold '{name}' twice");
            // TorchSharp's tensor reader checks dtype and shape, and copies into a CUDA tensor through a CPU one
            TorchSharp.TensorExtensionMethods.Load(target, r);
        }
    }

    /// <summary>TorchSharp writes counts as unsigned LEB128.</summary>
    internal static long ReadLength(BinaryReader r)
    {
        long value = 0;
        for (var shift = 0; ; shift += 7)
        {
            if (shift > 56) throw new InvalidDataException("corrupt weights: a length longer than 8 bytes");
            var b = r.ReadByte();
            value |= (long)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return value;
        }
    }
}
