using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using static TorchSharp.torch;

namespace Distill.Engine.Interop;

/// <summary>
/// A pickle reader for state_dicts and checkpoint dicts, modelled on PyTorch's own
/// torch.load(weights_only=True): only the opcodes those files use, and only allow-listed globals
/// (OrderedDict, the tensor rebuild functions, the storage types and dtypes, torch.Size, torch.device,
/// _codecs.encode for bytes), each
/// turned into an inert value by a handler here. Nothing named by the file is ever looked up or
/// called, so a pickle cannot run code; anything else is refused with its name. Lengths are
/// checked against the bytes actually there before anything is allocated.
/// </summary>
public sealed class RestrictedUnpickler
{
    public const int MaxPickleBytes = 256 << 20;
    private const int MaxStack = 1 << 20;
    private const int MaxMemo = 1 << 22;

    private static readonly HashSet<string> Allowed =
    [
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state", "_codecs.encode",
        "builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset", "torch.Size", "torch.device",
    ];

    /// <summary>torch's dtypes by the names they pickle as (a checkpoint may keep one beside its weights, as torch.load(weights_only=True) allows).</summary>
    private static readonly HashSet<string> Dtypes =
    [
        "float32", "float64", "float16", "bfloat16", "complex32", "complex64", "complex128", "uint8", "int8", "int16", "int32", "int64", "bool",
        "qint8", "quint8", "qint32", "quint4x2", "quint2x4", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
    ];

    private static readonly UTF8Encoding StrictUtf8 = new(false, throwOnInvalidBytes: true);

    private readonly byte[] p;
    private readonly string file;
    private readonly Func<object?[], StorageRef> persistentLoad;
    private readonly List<object?> stack = [];
    private readonly Stack<int> marks = new();
    private readonly Dictionary<long, object?> memo = [];
    private int i;

    private RestrictedUnpickler(byte[] pickle, int start, string file, Func<object?[], StorageRef> persistentLoad)
    {
        p = pickle;
        i = start;
        this.file = file;
        this.persistentLoad = persistentLoad;
    }

    /// <summary>Reads one pickle starting at <paramref name="start"/>; <paramref name="end"/> is where its STOP left off.</summary>
    public static object? Load(byte[] pickle, string file, Func<object?[], StorageRef> persistentLoad, int start, out int end)
    {
        var u = new RestrictedUnpickler(pickle, start, file, persistentLoad);
        var value = u.Run();
        end = u.i;
        return value;
    }

    public static object? Load(byte[] pickle, string file, Func<object?[], StorageRef> persistentLoad) =>
        Load(pickle, file, persistentLoad, 0, out _);

    private WeightFileException Bad(string problem) => new(file, $"pickle: {problem}");

    private object? Run()
    {
        while (true)
        {
            if (i >= p.Length) throw Bad("ends without a STOP opcode (truncated?)");
            var at = i;
            var op = p[i++];
            switch (op)
            {
                case 0x80: var proto = Take(1)[0]; if (proto > 5) throw Bad($"protocol {proto} is newer than any Python writes"); break;   // PROTO
                case 0x95: Take(8); break;                                                   // FRAME: a length hint only
                case (byte)'.':                                                              // STOP
                    if (stack.Count != 1 || marks.Count != 0) throw Bad($"STOP with {stack.Count} values on the stack");
                    return stack[0];
                case (byte)'(': marks.Push(stack.Count); break;                              // MARK
                case (byte)'0': Pop(); break;                                                // POP
                case (byte)'1': PopMark(); break;                                            // POP_MARK
                case (byte)'2': Push(Peek()); break;                                         // DUP
                case (byte)'}': Push(new PyDict()); break;                                   // EMPTY_DICT
                case (byte)']': Push(new List<object?>()); break;                            // EMPTY_LIST
                case (byte)')': Push(Array.Empty<object?>()); break;                         // EMPTY_TUPLE
                case 0x8f: Push(new List<object?>()); break;                                 // EMPTY_SET, kept as a list
                case (byte)'t': Push(PopMark().ToArray()); break;                            // TUPLE
                case 0x85: case 0x86: case 0x87:                                             // TUPLE1..3
                {
                    var n = op - 0x84;
                    if (stack.Count - MarkFloor() < n) throw Bad($"TUPLE{n} at byte {at} with too few values");
                    var t = stack.GetRange(stack.Count - n, n).ToArray();
                    stack.RemoveRange(stack.Count - n, n);
                    Push(t);
                    break;
                }
                case (byte)'N': Push(null); break;
                case 0x88: Push(true); break;
                case 0x89: Push(false); break;
                case (byte)'K': Push((long)Take(1)[0]); break;                                // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break;
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break;
                case 0x8a: Push(Long(Take(Take(1)[0]))); break;                               // LONG1
                case (byte)'L': Push(TextLong(Line("LONG"))); break;                             // LONG (protocols 0-1: a legacy file's magic number)
                case (byte)'I': Push(TextInt(Line("INT"))); break;                               // INT (protocols 0-1; "01"/"00" are True/False)
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break;   // BINFLOAT
                case (byte)'X': Push(Utf8(Take(Length(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))))); break;   // BINUNICODE
                case 0x8c: Push(Utf8(Take(Take(1)[0]))); break;                               // SHORT_BINUNICODE
                case (byte)'U': Push(Encoding.Latin1.GetString(Take(Take(1)[0]))); break;     // SHORT_BINSTRING
                case (byte)'T': Push(Encoding.Latin1.GetString(Take(Length(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))))); break;
                case (byte)'C': Push(Take(Take(1)[0]).ToArray()); break;                      // SHORT_BINBYTES
                case (byte)'B': Push(Take(Length(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))).ToArray()); break;
                case (byte)'q': Memo(Take(1)[0]); break;                                      // BINPUT
                case (byte)'r': Memo(BinaryPrimitives.ReadUInt32LittleEndian(Take(4))); break;
                case 0x94: Memo(memo.Count); break;                                          // MEMOIZE
                case (byte)'h': Push(Recall(Take(1)[0])); break;                              // BINGET
                case (byte)'j': Push(Recall(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))); break;
                case (byte)'c': { var module = Line("GLOBAL name"); var name = Line("GLOBAL name"); Push(Global(module, name)); break; }   // GLOBAL
                case 0x93:                                                                   // STACK_GLOBAL
                {
                    var name = Pop() as string ?? throw Bad("STACK_GLOBAL without a name string");
                    var module = Pop() as string ?? throw Bad("STACK_GLOBAL without a module string");
                    Push(Global(module, name));
                    break;
                }
                case (byte)'Q':                                                              // BINPERSID
                    Push(persistentLoad(Pop() as object?[] ?? throw Bad("a persistent id that is not a tuple")));
                    break;
                case (byte)'R':                                                              // REDUCE
                {
                    var args = Pop() as object?[] ?? throw Bad($"REDUCE at byte {at} without an argument tuple");
                    Push(Call(Pop(), args));
                    break;
                }
                case 0x81:                                                                   // NEWOBJ
                {
                    var args = Pop() as object?[] ?? throw Bad($"NEWOBJ at byte {at} without an argument tuple");
                    var cls = Pop();
                    if (cls is PyGlobal { Module: "collections", Name: "OrderedDict" } && args.Length == 0) Push(new PyDict());
                    else throw Bad($"creating {Describe(cls)} is not allowed");
                    break;
                }
                case (byte)'b':                                                              // BUILD: an OrderedDict's attributes (_metadata)
                {
                    Pop();
                    if (Peek() is not PyDict) throw Bad($"setting the state of {Describe(Peek())} is not allowed");
                    break;
                }
                case (byte)'s':                                                              // SETITEM
                {
                    var v = Pop();
                    var k = Pop();
                    Dict(Peek())[Key(k)] = v;
                    break;
                }
                case (byte)'u':                                                              // SETITEMS
                {
                    var items = PopMark();
                    if (items.Count % 2 != 0) throw Bad("SETITEMS with an odd number of values");
                    var d = Dict(Peek());
                    for (var j = 0; j < items.Count; j += 2) d[Key(items[j])] = items[j + 1];
                    break;
                }
                case (byte)'a': { var v = Pop(); ListOf(Peek()).Add(v); break; }               // APPEND
                case (byte)'e': { var items = PopMark(); ListOf(Peek()).AddRange(items); break; }   // APPENDS
                case 0x90: { var items = PopMark(); ListOf(Peek()).AddRange(items); break; }        // ADDITEMS (sets)
                case (byte)'p' or (byte)'g' or (byte)'P' or (byte)'S' or (byte)'V' or (byte)'F' or (byte)'d' or (byte)'l':
                    throw Bad($"opcode '{(char)op}' at byte {at} is pickle protocol 0 (text), which is not read; save the file again with torch.save's default protocol");
                default:
                    throw Bad($"opcode 0x{op:x2} at byte {at} is not one a state_dict uses");
            }
            if (stack.Count > MaxStack || memo.Count > MaxMemo) throw Bad("more values than any state_dict holds");
        }
    }

    private object Global(string module, string name)
    {
        var full = $"{module}.{name}";
        if (module == "torch" && (ElementTypes.OfStorage(name) is not null || Dtypes.Contains(name))) return new PyGlobal(module, name);
        if (Allowed.Contains(full)) return new PyGlobal(module, name);
        // a dict's key is pushed just before its value: the entry a checkpoint keeps beside its weights (args, best_acc)
        var key = stack.Count > 0 && stack[^1] is string k && k.Length <= 200 ? k : null;
        const string resave = "torch.load(weights_only=True) refuses it too; save the weights alone, e.g. torch.save(checkpoint[\"state_dict\"], \"weights.pth\")";
        var numpy = module.StartsWith("numpy", StringComparison.Ordinal);
        var hint = key is not null
            ? $" (the file's entry '{key}' holds {(numpy ? "a numpy value" : "a pickled Python object")}; {resave})"
            : module == "__main__" || module.StartsWith("torch.nn", StringComparison.Ordinal) || (name.Length > 0 && char.IsUpper(name[0]) && !numpy)
                ? " (the file holds a pickled object, such as a whole model from torch.save(model); save model.state_dict() instead)"
                : numpy ? $" (numpy values; {resave})" : "";
        throw Bad($"global '{full}' is not allowed: only tensors and the dict, list, tuple, number and string values of a state_dict are accepted{hint}");
    }

    private object? Call(object? f, object?[] args)
    {
        if (f is not PyGlobal g) throw Bad($"calling {Describe(f)} is not allowed");
        switch ($"{g.Module}.{g.Name}")
        {
            case "collections.OrderedDict":
                if (args.Length == 0) return new PyDict();
                throw Bad("OrderedDict with arguments");
            case "torch._utils._rebuild_tensor_v2":
            case "torch._utils._rebuild_tensor":
            {
                if (args.Length < 4) throw Bad($"{g.Name} with {args.Length} arguments");
                var storage = args[0] as StorageRef ?? throw Bad($"{g.Name} without a storage");
                return new TensorRef(storage, Int(args[1], "storage offset"), Ints(args[2], "size"), Ints(args[3], "stride"));
            }
            case "torch._utils._rebuild_parameter":
            case "torch._utils._rebuild_parameter_with_state":
                return args.Length >= 1 && args[0] is TensorRef t ? t : throw Bad($"{g.Name} without a tensor");
            case "torch.Size":
                return args is [object?[] dims] && dims.All(d => d is long) ? dims : throw Bad($"torch.Size of {(args.Length == 1 ? Describe(args[0]) : $"{args.Length} arguments")}");
            case "torch.device":
                return args switch
                {
                    [string type] => type,
                    [string type, long index] => $"{type}:{index}",
                    [string type, null] => type,
                    _ => throw Bad($"torch.device with {args.Length} arguments"),
                };
            case "_codecs.encode":
                if (args is [string s, string enc] && enc.Equals("latin1", StringComparison.OrdinalIgnoreCase)) return Encoding.Latin1.GetBytes(s);
                throw Bad("_codecs.encode other than latin1 text");
            case "builtins.set":
            case "builtins.frozenset":
            case "__builtin__.set":          // protocols 0-2 name Python 2's module
            case "__builtin__.frozenset":
                return args.Length == 0 ? new List<object?>() : args[0] is List<object?> l ? new List<object?>(l) : throw Bad($"{g.Name} of {Describe(args[0])}");
            default:
                throw Bad($"calling {g} is not allowed");
        }
    }

    private static string Describe(object? v) => v switch
    {
        null => "None",
        PyGlobal g => $"'{g}'",
        PyDict => "a dict",
        List<object?> => "a list",
        object?[] => "a tuple",
        TensorRef => "a tensor",
        _ => $"a {v.GetType().Name}",
    };

    private long Int(object? v, string what) => v is long l ? l : throw Bad($"tensor {what} is {Describe(v)}, not an integer");

    private long[] Ints(object? v, string what) => v is object?[] t
        ? t.Select(x => Int(x, what)).ToArray()
        : throw Bad($"tensor {what} is {Describe(v)}, not a tuple");

    private object Key(object? k) => k switch
    {
        string s => s,
        long l => l,
        _ => throw Bad($"a dict key that is {Describe(k)}; state_dict keys are strings"),
    };

    private PyDict Dict(object? v) => v as PyDict ?? throw Bad($"SETITEM on {Describe(v)}");
    private List<object?> ListOf(object? v) => v as List<object?> ?? throw Bad($"APPEND on {Describe(v)}");

    private void Push(object? v) => stack.Add(v);

    private int MarkFloor() => marks.Count == 0 ? 0 : marks.Peek();

    private object? Pop()
    {
        if (stack.Count <= MarkFloor()) throw Bad($"stack underflow at byte {i - 1}");
        var v = stack[^1];
        stack.RemoveAt(stack.Count - 1);
        return v;
    }

    private object? Peek() => stack.Count > MarkFloor() ? stack[^1] : throw Bad($"stack underflow at byte {i - 1}");

    private List<object?> PopMark()
    {
        if (marks.Count == 0) throw Bad($"no MARK before byte {i - 1}");
        var m = marks.Pop();
        var items = stack.GetRange(m, stack.Count - m);
        stack.RemoveRange(m, stack.Count - m);
        return items;
    }

    private void Memo(long key) => memo[key] = Peek();

    private object? Recall(long key) => memo.TryGetValue(key, out var v) ? v : throw Bad($"memo key {key} was never stored");

    private int Length(uint n) => n <= p.Length - i ? (int)n : throw Bad($"a length of {n} bytes runs past the end of the {p.Length}-byte pickle (truncated?)");

    private ReadOnlySpan<byte> Take(int n)
    {
        if (n > p.Length - i) throw Bad($"ends inside a value at byte {i} (truncated?)");
        var s = p.AsSpan(i, n);
        i += n;
        return s;
    }

    private string Utf8(ReadOnlySpan<byte> bytes)
    {
        try { return StrictUtf8.GetString(bytes); }
        catch (DecoderFallbackException) { throw Bad($"a string that is not UTF-8 before byte {i}"); }
    }

    private string Line(string what)
    {
        var end = Array.IndexOf(p, (byte)'\n', i);
        if (end < 0 || end - i > 256) throw Bad($"a {what} without an end of line");
        var s = Encoding.ASCII.GetString(p, i, end - i);
        i = end + 1;
        return s;
    }

    private object TextLong(string text)
    {
        var digits = text.EndsWith('L') ? text[..^1] : text;
        if (digits.Length is 0 or > 40 || !BigInteger.TryParse(digits, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var v))
            throw Bad($"a LONG that is not an integer ('{text}')");
        return Narrow(v);
    }

    private object TextInt(string text) => text switch
    {
        "01" => true,
        "00" => false,
        _ => long.TryParse(text, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var v) ? v : throw Bad($"an INT that is not an integer ('{text}')"),
    };

    /// <summary>An integer as a long where it fits (as every count and size does), else as itself.</summary>
    private static object Narrow(BigInteger v) => v >= long.MinValue && v <= long.MaxValue ? (long)v : v;

    private object Long(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length == 0) return 0L;
        if (bytes.Length > 16) throw Bad("an integer over 128 bits");
        var v = new BigInteger(bytes, isUnsigned: false, isBigEndian: false);
        return Narrow(v);
    }
}
