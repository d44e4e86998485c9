using Distill.Engine.Pipeline;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Distill.Engine.Losses;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Distill.Engine.Benchmarks;

public sealed record BenchRow(string Workload, string Model, int Batch, double MsPerStep, double ImagesPerSecond, int Repeats);

public sealed record BenchTable(string Device, string Machine, string When, IReadOnlyList<BenchRow> Rows)
{
    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Device: {Device}; machine: {Machine}; {When}");
        sb.AppendLine();
        sb.AppendLine("| workload | models | batch | ms/step (median) | images/s | repeats |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|");
        foreach (var r in Rows)
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture, $"| {r.Workload} | {r.Model} | {r.Batch} | {r.MsPerStep:F2} | {r.ImagesPerSecond:F0} | {r.Repeats} |"));
        return sb.ToString();
    }

    public void Save(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.ChangeExtension(path, ".md"), ToMarkdown());
    }
}

/// <summary>
/// The engine's hot workloads, timed as medians after warm-up (synchronising CUDA). The same
/// workloads exist in tools/bench_pytorch.py so that both run on one GPU in one command.
/// </summary>
public static class Benchmarks
{
    public static BenchTable Run(string deviceName, bool quick, TextWriter log)
    {
        Native.TorchRuntime.Initialize();
        var device = Devices.Resolve(deviceName);
        var cudaDev = device.type == DeviceType.CUDA;
        var rows = new List<BenchRow>();
        var (warm, reps) = quick ? (1, 3) : (3, cudaDev ? 30 : 8);
        manual_seed(0);

        rows.Add(Time("DAFL step (G+T+S)", "DAFL-G128 / lenet5 / lenet5-half", 512, warm, reps, device, log, DaflStep(device, 512, 128)));
        rows.Add(Time("DAFL step (G+T+S)", "DAFL-G32 / lenet5 / lenet5-half", 128, warm, reps, device, log, DaflStep(device, 128, 32)));
        foreach (var b in quick ? new[] { 256 } : [256, 1024])
            rows.Add(Time("DeepInversion step", "resnet20 (1x32x32)", b, warm, reps, device, log, DiStep(device, "resnet20", 1, b, adi: false)));
        if (cudaDev)
            foreach (var b in new[] { 256, 1024 })
                rows.Add(Time("DeepInversion step", "resnet34 (3x32x32)", b, warm, reps, device, log, DiStep(device, "resnet34", 3, b, adi: false)));
        rows.Add(Time("ADI step (+student)", "resnet20 / lenet5-half", 256, warm, reps, device, log, DiStep(device, "resnet20", 1, 256, adi: true)));
        rows.Add(Time("KD student step", "lenet5 -> lenet5-half", 256, warm, reps, device, log, KdStep(device, 256)));
        rows.Add(Time("teacher labelling (T=4)", "lenet5", 1024, warm, reps * 3, device, log, Labelling(device, 1024)));
        // what every run, trial and node pays before its first step (on the CPU whatever the device)
        rows.Add(Time("MNIST load (IDX -> 32x32, normalised)", "60,000 train + 10,000 test", 70_000, warm, reps, device, log, LoadMnist));

        var machine = $"{Environment.ProcessorCount} logical CPUs, {get_num_threads()} torch threads, CPU conv {(Native.TorchRuntime.UseSafeConvolution ? "channel-padded, input gradient as a forward conv" : "native")}" +
                      (cudaDev ? $", CUDA devices {cuda.device_count()}" : "");
        return new BenchTable(cudaDev ? "cuda" : "cpu", machine, DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'"), rows);
    }

    private static BenchRow Time(string name, string model, int batch, int warm, int reps, Device device, TextWriter log, Action step)
    {
        for (var i = 0; i < warm; i++) step();
        Devices.Synchronize(device);
        var times = new List<double>();
        for (var i = 0; i < reps; i++)
        {
            var sw = Stopwatch.StartNew();
            step();
            Devices.Synchronize(device);
            times.Add(sw.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        var median = times[times.Count / 2];
        var row = new BenchRow(name, model, batch, Math.Round(median, 3), Math.Round(batch / (median / 1000), 1), reps);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {name,-26} {model,-34} batch {batch,5}  {median,9:F2} ms/step  {row.ImagesPerSecond,9:F0} img/s"));
        return row;
    }

    private static void LoadMnist()
    {
        using var data = DataSplits.Load(new DataSpec { Name = "mnist" });
    }

    private static Action DaflStep(Device device, int batch, int width)
    {
        var teacher = ModelFactory.Create("lenet5", 1, 32, 10);
        var student = ModelFactory.Create("lenet5-half", 1, 32, 10);
        teacher.to(device);
        student.to(device);
        var trainer = new DaflTrainer(teacher, student, new DaflSpec { BatchSize = batch, GeneratorWidth = width, Steps = int.MaxValue },
            new TrainSpec { Lr = 2e-3 }, device, 1);
        return () => trainer.TrainStep(false);
    }

    private static Action DiStep(Device device, string arch, int channels, int batch, bool adi)
    {
        var teacher = ModelFactory.Create(arch, channels, 32, 10);
        teacher.to(device);
        Classifier? student = null;
        if (adi)
        {
            student = ModelFactory.Create(channels == 1 ? "lenet5-half" : "resnet18", channels, 32, 10);
            student.to(device).eval();
        }
        SourceTrainer.Freeze(teacher);
        var stats = new BatchNormStatistics(teacher);
        var spec = new DeepInversionSpec { BatchSize = batch, Iterations = int.MaxValue, CompetitionWeight = adi ? 1 : 0 };
        var mean = Enumerable.Repeat(0.5, channels).ToArray();
        var targets = arange(batch, int64) % 10;
        var synth = new ImageSynthesizer(teacher, stats, student, spec, targets, mean, mean, device, new Generator(1));
        return () => synth.Iterate(false);
    }

    private static Action KdStep(Device device, int batch)
    {
        var teacher = ModelFactory.Create("lenet5", 1, 32, 10);
        var student = ModelFactory.Create("lenet5-half", 1, 32, 10);
        teacher.to(device);
        student.to(device);
        SourceTrainer.Freeze(teacher);
        var opt = optim.Adam(student.parameters(), 1e-3);
        var x = randn([batch, 1, 32, 32], device: device);
        var y = randint(0, 10, [batch], device: device);
        return () =>
        {
            using var scope = NewDisposeScope();
            Tensor t;
            using (no_grad()) t = teacher.call(x);
            opt.zero_grad();
            Distillation.Hinton(student.call(x), t, y, 4, 0.1).backward();
            opt.step();
        };
    }

    private static Action Labelling(Device device, int batch)
    {
        var teacher = ModelFactory.Create("lenet5", 1, 32, 10);
        teacher.to(device).eval();
        var x = randn([batch, 1, 32, 32], device: device);
        return () =>
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var p = nn.functional.softmax(teacher.call(x) / 4.0, 1);
            p.sum().item<float>();   // soft labels are read back, as a teacher actor would send them
        };
    }
}
