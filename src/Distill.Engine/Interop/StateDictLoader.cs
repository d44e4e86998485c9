using static TorchSharp.torch;

namespace Distill.Engine.Interop;

/// <summary>What a load did: the format found, where in the file the weights were, how keys were renamed, which dtypes were converted.</summary>
public sealed record LoadReport(string Format, string? Key, IReadOnlyList<string> Renamed, int Tensors, IReadOnlyList<string> Converted)
{
    public override string ToString() =>
        $"{Format}{(Key is null ? "" : $", weights under '{Key}'")}, {Tensors} tensors" +
        (Renamed.Count > 0 ? $", {string.Join(", ", Renamed)}" : "") +
        (Converted.Count > 0 ? $", converted {string.Join(", ", Converted)}" : "");
}

/// <summary>
/// Strict loading of a weights file into a module. Every tensor of the module must be in the file
/// with its shape, and nothing else may be; otherwise one error lists the missing, unexpected and
/// wrongly shaped keys by name and shape, and nothing is loaded. A DataParallel `module.` (or
/// torch.compile `_orig_mod.`) prefix on every key is taken off; other renamings are a key map of
/// prefixes. Half, bfloat16 and double weights are converted to the module's dtype.
/// </summary>
public static class StateDictLoader
{
    private static readonly string[] WrapperPrefixes = ["module.", "_orig_mod."];

    /// <summary>The spec's checkpoint (with its key and key map) into the module; null when the spec names none.</summary>
    public static LoadReport? LoadCheckpoint(nn.Module module, Specs.ModelSpec spec, string what) =>
        spec.Checkpoint is { } path ? Load(module, path, spec.CheckpointKey, spec.KeyMap, what) : null;

    /// <summary>The spec's checkpoint into a model made for its data, named in an error as "arch (CxSxS, N classes)".</summary>
    public static LoadReport? LoadCheckpoint(nn.Module module, Specs.ModelSpec spec, int channels, int size, int classes) =>
        LoadCheckpoint(module, spec, $"{spec.Arch} ({channels}x{size}x{size}, {classes} classes)");

    public static LoadReport Load(nn.Module module, string path, string? key = null, IReadOnlyList<KeyValuePair<string, string>>? keyMap = null, string? what = null)
    {
        using var file = WeightFile.Open(path, key);
        return Load(module, file, keyMap, what);
    }

    public static LoadReport Load(nn.Module module, WeightFile file, IReadOnlyList<KeyValuePair<string, string>>? keyMap = null, string? what = null)
    {
        what ??= module.GetType().Name;
        var target = module.state_dict();
        var renamed = new List<string>();
        var names = file.Entries.Select(e => e.Name).ToList();
        // a map written for the names as the error lists them (after module.) applies after the wrapper
        // prefixes are taken off; one that names a wrapper prefix itself applies to the file's own names
        var mapsWrapped = keyMap?.Any(kv => WrapperPrefixes.Any(w => kv.Key.StartsWith(w, StringComparison.Ordinal))) == true;
        if (!mapsWrapped) names = WithoutWrappers(names, target, renamed);
        var unmapped = false;
        if (keyMap is { Count: > 0 })
        {
            var count = 0;
            names = names.Select(n =>
            {
                foreach (var (from, to) in keyMap)
                    if (n.StartsWith(from, StringComparison.Ordinal)) { count++; return to + n[from.Length..]; }
                return n;
            }).ToList();
            renamed.Add($"{count} keys renamed by the key map");
            unmapped = count == 0;
        }
        names = WithoutWrappers(names, target, renamed);
        if (names.GroupBy(n => n).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new WeightFileException(file.Path, $"two tensors of the file are both '{twice.Key}' after renaming");

        var byName = names.Zip(file.Entries).ToDictionary(p => p.First, p => p.Second);
        var missing = target.Where(kv => !byName.ContainsKey(kv.Key) && !kv.Key.EndsWith(".num_batches_tracked", StringComparison.Ordinal))
            .Select(kv => $"{kv.Key} {Shape(kv.Value.shape)}").ToList();
        var unexpected = byName.Where(kv => !target.ContainsKey(kv.Key)).Select(kv => $"{kv.Key} {kv.Value.ShapeText}").ToList();
        var misfit = new List<string>();
        foreach (var (name, e) in byName)
        {
            if (!target.TryGetValue(name, out var t)) continue;
            if (!e.Shape.SequenceEqual(t.shape)) misfit.Add($"{name}: file {e.ShapeText}, model {Shape(t.shape)}");
            else if (IsFloat(e.DType) != IsFloat(t.dtype)) misfit.Add($"{name}: file {e.DType}, model {t.dtype}");
        }
        if (missing.Count + unexpected.Count + misfit.Count > 0)
        {
            var parts = new List<string>();
            if (missing.Count > 0) parts.Add($"{missing.Count} missing: {List(missing)}");
            if (unexpected.Count > 0) parts.Add($"{unexpected.Count} unexpected: {List(unexpected)}");
            if (misfit.Count > 0) parts.Add($"{misfit.Count} that do not fit: {List(misfit)}");
            var hint = Hint(byName, target) ?? (unmapped ? $"; key_map's prefixes ({string.Join(", ", keyMap!.Select(kv => $"'{kv.Key}'"))}) begin none of the file's names"
                : unexpected.Count > 0 && missing.Count > 0 ? "; if the names differ only by a prefix, give key_map (for example {\"backbone.\": \"\"})" : "");
            throw new WeightFileException(file.Path, $"{file.Format} weights{(file.Key is null ? "" : $" under '{file.Key}'")} do not fit {what}: {string.Join("; ", parts)}{hint}");
        }

        // every tensor read (and its view and values checked) before the first is copied: a damaged file changes nothing
        var read = new List<(Tensor Dst, Tensor Src)>();
        var converted = new SortedSet<string>();
        try
        {
            foreach (var (name, e) in byName)
            {
                var dst = target[name];
                var src = e.Read();
                if (src.dtype != dst.dtype)
                {
                    // checked as the model will hold it: a double beyond float's range is infinite there
                    converted.Add($"{src.dtype} to {dst.dtype}");
                    using var raw = src;
                    src = raw.to_type(dst.dtype);
                }
                read.Add((dst, src));
                if (NonFinite(src) is { } bad)
                    throw new WeightFileException(file.Path, $"'{e.Name}'{(e.Name == name ? "" : $" (the model's '{name}')")} holds {bad} NaN or infinite value(s) of {src.numel()}" +
                                                             $"{(e.DType == dst.dtype ? "" : $" as {dst.dtype}")}: the weights are damaged, or were saved from a training run that diverged");
            }
            using (no_grad())
                foreach (var (dst, src) in read) dst.copy_(src);
        }
        finally
        {
            foreach (var (_, src) in read) src.Dispose();
        }
        return new LoadReport(file.Format, file.Key, renamed, byName.Count, converted.ToList());
    }

    /// <summary>The names with a DataParallel or torch.compile prefix taken off, where every name has it and none fits the model as it is.</summary>
    private static List<string> WithoutWrappers(List<string> names, Dictionary<string, Tensor> target, List<string> renamed)
    {
        for (var changed = true; changed;)
        {
            changed = false;
            foreach (var prefix in WrapperPrefixes)
                if (names.Count > 0 && names.All(n => n.StartsWith(prefix, StringComparison.Ordinal)) && !names.Any(target.ContainsKey))
                {
                    names = names.Select(n => n[prefix.Length..]).ToList();
                    renamed.Add($"'{prefix}' prefix removed");
                    changed = true;
                }
        }
        return names;
    }

    /// <summary>How many values of a floating-point tensor are NaN or infinite; null when none (or not floating point).</summary>
    private static long? NonFinite(Tensor t)
    {
        if (!t.is_floating_point()) return null;
        using var scope = NewDisposeScope();
        var count = logical_not(isfinite(t)).sum().item<long>();
        return count > 0 ? count : null;
    }

    /// <summary>What the mismatch most likely means, for the two that users meet most; null otherwise.</summary>
    private static string? Hint(Dictionary<string, WeightEntry> file, Dictionary<string, Tensor> model)
    {
        // torchvision's ResNet (fc, a 7x7 stem) given to the data-free repositories' CIFAR ResNet (linear, a 3x3 stem)
        if (file.ContainsKey("fc.weight") && file.ContainsKey("layer1.0.conv1.weight") && model.ContainsKey("linear.weight"))
            return "; the file's names (fc, layer1.0.conv1) and its stem are torchvision's ResNet: give arch: torchvision-resnet18, -34 or -50 (docs/pytorch.md)";
        // a classifier for another number of classes (torchvision's ImageNet 1000): the model's last weight, [classes, features]
        if (model.LastOrDefault(kv => kv.Key.EndsWith(".weight", StringComparison.Ordinal)) is (var head, var w) && w is not null && w.shape.Length == 2
            && file.TryGetValue(head, out var f) && f.Shape.Length == 2 && f.Shape[1] == w.shape[1] && f.Shape[0] != w.shape[0])
            return $"; the file's classifier ({head}) has {f.Shape[0]} classes and this data {w.shape[0]}: weights for this dataset's classes are needed (fine-tune the network on it first)";
        // an MLP made for another image size: its first layer (the model's first tensor) takes C x s x s inputs in the file, C x m x m here
        if (model.Count > 0 && model.First() is var (name, t) && t.shape.Length == 2 && file.TryGetValue(name, out var e)
            && e.Shape.Length == 2 && e.Shape[0] == t.shape[0] && e.Shape[1] != t.shape[1])
            foreach (var c in new long[] { 1, 3 })
                if (Side(e.Shape[1], c) is { } s && Side(t.shape[1], c) is { } m)
                    return $"; {name} takes {e.Shape[1]} inputs in the file ({c}x{s}x{s} images) and {t.shape[1]} here ({c}x{m}x{m}): if the network was trained on {s}-pixel images, set data.image_size: {s}";
        return null;
    }

    /// <summary>s where n = c x s x s (s at least 8), else null.</summary>
    private static long? Side(long n, long c)
    {
        if (n % c != 0) return null;
        var s = (long)Math.Round(Math.Sqrt(n / c));
        return s >= 8 && s * s * c == n ? s : null;
    }

    private static bool IsFloat(ScalarType t) => t is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64;

    private static string Shape(long[] s) => $"[{string.Join(", ", s)}]";

    private static string List(List<string> items) =>
        string.Join(", ", items.Take(20)) + (items.Count > 20 ? $" and {items.Count - 20} more" : "");
}
