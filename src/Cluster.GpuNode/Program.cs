using Distill.Engine.Benchmarks;
using Distill.Engine.Native;
using TorchSharp;

// The GPU node host. The cluster roles (generator, teacher and student actors) arrive with the
// cluster issue; today it reports what this machine offers and runs the engine benchmark on it.
NativeBootstrap.EnsureTorchLoadable();
TorchRuntime.Initialize();
switch (args.FirstOrDefault())
{
    case "devices":
        Console.WriteLine($"cuda available: {torch.cuda.is_available()}, devices: {(torch.cuda.is_available() ? torch.cuda.device_count() : 0)}");
        Console.WriteLine($"cpu threads: {torch.get_num_threads()}, conv path: {(TorchRuntime.UseSafeConvolution ? "exact (channel-padded)" : "native")}");
        return 0;
    case "bench":
        var device = args.Length > 2 && args[1] == "--device" ? args[2] : "auto";
        var table = Benchmarks.Run(device, quick: args.Contains("--quick"), Console.Out);
        var output = Path.Combine("results", $"bench-gpunode-{table.Device}.json");
        table.Save(output);
        Console.WriteLine($"saved {output}");
        return 0;
    default:
        Console.Error.WriteLine("usage: Cluster.GpuNode devices | bench [--device cpu|cuda|auto] [--quick]");
        return 2;
}
