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
        Safetensors.Write(Path.Combine(dir, SafetensorsFile), tensors);
        TorchSaveWriter.Write(Path.Combine(dir, PyTorchFile), tensors);
    }
}
