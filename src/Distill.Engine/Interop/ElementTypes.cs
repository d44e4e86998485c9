using static TorchSharp.torch;

namespace Distill.Engine.Interop;

/// <summary>
/// The element types weight files hold, with their names in each format (torch.save's storage
/// classes, safetensors' dtype codes) and their sizes: one table for every reader and writer.
/// </summary>
public static class ElementTypes
{
    public sealed record Type(ScalarType Scalar, string Storage, string SafetensorsCode, int Size);

    public static readonly IReadOnlyList<Type> All =
    [
        new(ScalarType.Float64, "DoubleStorage", "F64", 8),
        new(ScalarType.Float32, "FloatStorage", "F32", 4),
        new(ScalarType.Float16, "HalfStorage", "F16", 2),
        new(ScalarType.BFloat16, "BFloat16Storage", "BF16", 2),
        new(ScalarType.Int64, "LongStorage", "I64", 8),
        new(ScalarType.Int32, "IntStorage", "I32", 4),
        new(ScalarType.Int16, "ShortStorage", "I16", 2),
        new(ScalarType.Int8, "CharStorage", "I8", 1),
        new(ScalarType.Byte, "ByteStorage", "U8", 1),
        new(ScalarType.Bool, "BoolStorage", "BOOL", 1),
    ];

    private static readonly Dictionary<ScalarType, Type> ByScalar = All.ToDictionary(t => t.Scalar);
    private static readonly Dictionary<string, Type> ByStorage = All.ToDictionary(t => t.Storage);
    private static readonly Dictionary<string, Type> ByCode = All.ToDictionary(t => t.SafetensorsCode);

    /// <summary>The type of a torch storage class (torch.FloatStorage), or null.</summary>
    public static Type? OfStorage(string name) => ByStorage.GetValueOrDefault(name);

    /// <summary>The type of a safetensors dtype code (F32), or null.</summary>
    public static Type? OfSafetensors(string code) => ByCode.GetValueOrDefault(code);

    /// <summary>The table's entry for a scalar type, or null for one no weight file holds.</summary>
    public static Type? Of(ScalarType t) => ByScalar.GetValueOrDefault(t);

    public static int Size(ScalarType t) => Of(t)?.Size ?? throw new ArgumentException($"no element size for {t}");
}
