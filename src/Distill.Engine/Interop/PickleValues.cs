using System.Collections;
using static TorchSharp.torch;

namespace Distill.Engine.Interop;

/// <summary>
/// What the restricted unpickler builds: Python dicts (insertion-ordered, string or integer keys),
/// lists, tuples (object?[]), numbers, strings, bytes, None, and for tensors only references into
/// the file's storages, so that nothing is allocated before the bounds are checked and only the
/// chosen state_dict is ever read.
/// </summary>
public sealed class PyDict : IEnumerable<KeyValuePair<object, object?>>
{
    private readonly OrderedDictionary<object, object?> items = new();

    public int Count => items.Count;
    public IEnumerable<object> Keys => items.Keys;
    public object? this[object key] { get => items[key]; set => items[key] = value; }
    public bool TryGetValue(object key, out object? value) => items.TryGetValue(key, out value);
    public IEnumerator<KeyValuePair<object, object?>> GetEnumerator() => items.GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>A GLOBAL the allow-list accepted: inert, only ever called by the unpickler's own handlers.</summary>
public sealed record PyGlobal(string Module, string Name)
{
    public override string ToString() => $"{Module}.{Name}";
}

/// <summary>A storage of the file: its record key, element type and element count.</summary>
public sealed record StorageRef(string Key, ScalarType DType, long Numel);

/// <summary>A tensor as torch._utils._rebuild_tensor_v2 describes it: a strided view of a storage.</summary>
public sealed record TensorRef(StorageRef Storage, long Offset, long[] Size, long[] Stride)
{
    public long Numel => Size.Aggregate(1L, (a, d) => checked(a * d));
    public string ShapeText => $"[{string.Join(", ", Size)}]";
}

/// <summary>A tensor as bytes: C-order, little-endian, the dtype's element size each. What the writers take, so that converting a file needs no libtorch.</summary>
public sealed record RawTensor(string Name, ScalarType DType, long[] Shape, byte[] Data)
{
    public static RawTensor From(string name, Tensor t)
    {
        using var c = t.detach().cpu().contiguous();
        return new RawTensor(name, c.dtype, c.shape, c.bytes.ToArray());
    }
}
