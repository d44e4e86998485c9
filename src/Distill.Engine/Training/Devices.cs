using TorchSharp;
using static TorchSharp.torch;

namespace Distill.Engine.Training;

public static class Devices
{
    /// <summary>cpu, cuda (fails clearly if CUDA is missing) or auto (cuda when available).</summary>
    public static Device Resolve(string name) => name switch
    {
        "cpu" => CPU,
        "cuda" => cuda.is_available() ? CUDA : throw new InvalidOperationException(
            "device: cuda was asked for, but TorchSharp finds no CUDA device: this machine has no GPU, or the process loaded a CPU-only libtorch (docs/gpu.md: running on a CUDA machine's own libtorch)"),
        "auto" => cuda.is_available() ? CUDA : CPU,
        _ => throw new ArgumentException($"unknown device '{name}' (cpu, cuda, auto)"),
    };

    public static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize();
    }
}
