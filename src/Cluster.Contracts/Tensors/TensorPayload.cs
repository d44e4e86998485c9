using MessagePack;

namespace Cluster.Contracts.Tensors;

/// <summary>Element types a tensor may travel as.</summary>
public enum WireDType : byte { Float32 = 0, Float16 = 1, BFloat16 = 2, Int64 = 3, UInt8 = 4 }

/// <summary>
/// A tensor on the wire: shape, element type and the raw little-endian bytes. Explicit keys, no
/// type names: a peer cannot choose what gets built. Validate before trusting the sizes.
/// </summary>
[MessagePackObject]
public sealed record TensorPayload(
    [property: Key(0)] long[] Shape,
    [property: Key(1)] WireDType DType,
    [property: Key(2)] byte[] Data)
{
    public static int ElementSize(WireDType t) => t switch
    {
        WireDType.Float32 => 4,
        WireDType.Float16 or WireDType.BFloat16 => 2,
        WireDType.Int64 => 8,
        WireDType.UInt8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown element type"),
    };

    /// <summary>Throws with the reason when shape, type and byte count disagree.</summary>
    public void Validate(long maxBytes)
    {
        if (Shape is null || Data is null) throw new InvalidDataException("tensor payload without shape or data");
        if (Shape.Any(d => d < 0)) throw new InvalidDataException($"negative dimension in shape [{string.Join(", ", Shape)}]");
        var count = Shape.Aggregate(1L, (a, d) => checked(a * d));
        var expected = checked(count * ElementSize(DType));
        if (expected > maxBytes) throw new InvalidDataException($"tensor of {expected} bytes exceeds the {maxBytes}-byte limit");
        if (Data.Length != expected)
            throw new InvalidDataException($"tensor [{string.Join(", ", Shape)}] of {DType} needs {expected} bytes, got {Data.Length}");
    }
}
