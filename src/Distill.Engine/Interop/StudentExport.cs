namespace Distill.Engine.Interop;

/// <summary>
/// The student for PyTorch: beside student.pt (ClusterDistill's own format), the same tensors as
/// student.safetensors and as a torch.save state_dict, student.pth. The names are the modules'
/// own, which are those of the PyTorch definitions in tools/torch_models.py.
/// </summary>
public static class StudentExport
{
    public const string SafetensorsFile = "student.safetensors";
    public const string PyTorchFile = "student.pth";

    /// <summary>Writes both exports into <paramref name="dir"/> from a ClusterDistill or safetensors weights file, byte for byte: no libtorch work, so any thread may call it.</summary>
    public static void Write(string weights, string dir)
    {
        using var file = WeightFile.Open(weights);
        var tensors = file.Entries.Select(e => new RawTensor(e.Name, e.DType, e.Shape,
            e.ReadRaw?.Invoke() ?? throw new WeightFileException(weights, $"{file.Format} weights are exported from a model, not converted"))).ToList();
        tensors = InPyTorchOrder(tensors);
        Safetensors.Write(Path.Combine(dir, SafetensorsFile), tensors);
        TorchSaveWriter.Write(Path.Combine(dir, PyTorchFile), tensors);
    }

    /// <summary>
    /// The tensors in the order PyTorch's state_dict() gives them: a module's own parameters and
    /// buffers, then each child's, children in the order they were registered. TorchSharp lists every
    /// parameter before any buffer (a batch norm's running statistics come after the whole network's
    /// weights), so the order is rebuilt from the names: a module takes the place of its first tensor.
    /// </summary>
    public static List<RawTensor> InPyTorchOrder(IEnumerable<RawTensor> tensors)
    {
        var root = new ModuleNode();
        foreach (var t in tensors)
        {
            var path = t.Name.Split('.');
            var node = root;
            foreach (var part in path[..^1]) node = node.Child(part);
            node.Own.Add(t);
        }
        var ordered = new List<RawTensor>();
        root.Walk(ordered);
        return ordered;
    }

    private sealed class ModuleNode
    {
        public readonly List<RawTensor> Own = [];
        private readonly List<ModuleNode> children = [];
        private readonly Dictionary<string, ModuleNode> byName = [];

        public ModuleNode Child(string name)
        {
            if (!byName.TryGetValue(name, out var c)) children.Add(byName[name] = c = new ModuleNode());
            return c;
        }

        public void Walk(List<RawTensor> into)
        {
            into.AddRange(Own);
            foreach (var c in children) c.Walk(into);
        }
    }
}
