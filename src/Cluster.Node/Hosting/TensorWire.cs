using Cluster.Contracts.Tensors;
using TorchSharp;
using static TorchSharp.torch;

namespace Cluster.Node.Hosting;

/// <summary>Tensors to and from <see cref="TensorPayload"/> (always contiguous CPU little-endian bytes).</summary>
public static class TensorWire
{
    public static TensorPayload ToPayload(Tensor t, WireDType dtype = WireDType.Float32)
    {
        using var scope = NewDisposeScope();
        var cpu = t.detach().to(ToScalar(dtype)).cpu().contiguous();
        return new TensorPayload(cpu.shape, dtype, cpu.bytes.ToArray());
    }

    /// <summary>A float32 tensor on device (half-precision payloads are widened).</summary>
    public static Tensor ToTensor(TensorPayload p, Device device, long maxBytes = long.MaxValue)
    {
        p.Validate(maxBytes);
        using var scope = NewDisposeScope();
        var t = empty(p.Shape, ToScalar(p.DType));
        t.bytes = p.Data;
        return t.to(float32).to(device).DetachFromDisposeScope();
    }

    /// <summary>Class labels (int64 on device), as <see cref="LabelsToPayload"/> sent them.</summary>
    public static Tensor ToLabels(TensorPayload p, Device device, long maxBytes = long.MaxValue)
    {
        p.Validate(maxBytes);
        if (p.DType is not (WireDType.UInt8 or WireDType.Int64)) throw new InvalidDataException($"class labels travel as integers, not {p.DType}");
        using var scope = NewDisposeScope();
        var t = empty(p.Shape, ToScalar(p.DType));
        t.bytes = p.Data;
        return t.to(int64).to(device).DetachFromDisposeScope();
    }

    /// <summary>Class labels as bytes when every one fits (1 byte a label), else as int64.</summary>
    public static TensorPayload LabelsToPayload(Tensor labels)
    {
        using var scope = NewDisposeScope();
        var fits = labels.numel() == 0 || labels.min().item<long>() >= 0 && labels.max().item<long>() <= byte.MaxValue;
        return ToPayload(labels, fits ? WireDType.UInt8 : WireDType.Int64);
    }

    public static ScalarType ToScalar(WireDType d) => d switch
    {
        WireDType.Float32 => ScalarType.Float32,
        WireDType.Float16 => ScalarType.Float16,
        WireDType.BFloat16 => ScalarType.BFloat16,
        WireDType.Int64 => ScalarType.Int64,
        WireDType.UInt8 => ScalarType.Byte,
        _ => throw new ArgumentOutOfRangeException(nameof(d), d, "unknown wire element type"),
    };

    public static WireDType Parse(string name) => name switch
    {
        "fp32" => WireDType.Float32,
        "fp16" => WireDType.Float16,
        "bf16" => WireDType.BFloat16,
        _ => throw new ArgumentException($"'{name}' is not a wire precision (fp32, fp16, bf16)"),
    };
}
