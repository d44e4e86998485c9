using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;

namespace Cluster.Node.Telemetry;

/// <summary>
/// GPU memory as nvidia-smi reports it (TorchSharp does not expose libtorch's allocator
/// statistics): each device's used and total memory, and what this process holds on it. In a
/// container nvidia-smi lists processes by the host's PIDs, or not at all, so this process is
/// often not found there; the device figures are what a pod that owns its GPUs reads then.
/// </summary>
public static class GpuMemory
{
    /// <summary>One device: its UUID, its used and total bytes, and this process's bytes on it where nvidia-smi lists this process.</summary>
    public sealed record Reading(string Device, double UsedBytes, double TotalBytes, double? ProcessBytes);

    /// <summary>The queries, with the columns <see cref="Parse"/> reads, in nvidia-smi's CSV without header or units (MiB).</summary>
    public static readonly string[] DeviceQuery = ["--query-gpu=uuid,memory.used,memory.total", "--format=csv,noheader,nounits"];
    public static readonly string[] ProcessQuery = ["--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"];

    private const double MiB = 1048576;

    /// <summary>
    /// The readings from the two queries' output. Lines that are not the expected columns, and
    /// cells nvidia-smi cannot fill ("[N/A]", "[Not Supported]"), are skipped: no figure rather
    /// than a wrong one.
    /// </summary>
    public static IReadOnlyList<Reading> Parse(string devices, string processes, int pid)
    {
        var own = new Dictionary<string, double>();
        var id = pid.ToString(CultureInfo.InvariantCulture);
        foreach (var cells in Rows(processes, 3))
            if (cells[0] == id && Mib(cells[2]) is { } bytes) own[cells[1]] = own.GetValueOrDefault(cells[1]) + bytes;
        var readings = new List<Reading>();
        foreach (var cells in Rows(devices, 3))
            if (cells[0].Length > 0 && Mib(cells[1]) is { } used && Mib(cells[2]) is { } total)
                readings.Add(new Reading(cells[0], used, total, own.TryGetValue(cells[0], out var b) ? b : null));
        return readings;
    }

    private static IEnumerable<string[]> Rows(string csv, int columns) =>
        csv.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(line => line.Split(',', StringSplitOptions.TrimEntries))
            .Where(cells => cells.Length == columns);

    private static double? Mib(string cell) =>
        double.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= 0 ? v * MiB : null;

    /// <summary>An nvidia-smi that did not answer in time: no other is started while it lives (a hung driver leaves it stuck in the kernel, where no kill reaches it).</summary>
    private static Process? stuck;

    /// <summary>Runs nvidia-smi once per query (2 s each at most); null where it is missing, fails or hangs, or one that hung is still there.</summary>
    public static async Task<IReadOnlyList<Reading>?> Query(CancellationToken ct, string program = "nvidia-smi")
    {
        if (stuck is { } s)
        {
            try { if (!s.HasExited) return null; }
            catch (InvalidOperationException) { }
            s.Dispose();
            stuck = null;
        }
        var devices = await Run(program, DeviceQuery, ct);
        if (devices is null) return null;
        var processes = await Run(program, ProcessQuery, ct) ?? "";
        return Parse(devices, processes, Environment.ProcessId);
    }

    private static async Task<string?> Run(string program, string[] args, CancellationToken ct)
    {
        Process? p;
        try
        {
            p = Process.Start(new ProcessStartInfo(program, args) { RedirectStandardOutput = true, RedirectStandardError = true });
            if (p is null) return null;
        }
        catch (Exception e) when (e is Win32Exception or IOException) { return null; }
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(2));
        try
        {
            var errors = p.StandardError.ReadToEndAsync(timeout.Token);   // read, so that a talkative failure cannot fill the pipe
            var text = await p.StandardOutput.ReadToEndAsync(timeout.Token);
            await p.WaitForExitAsync(timeout.Token);
            await errors;
            var ok = p.ExitCode == 0;
            p.Dispose();
            return ok ? text : null;
        }
        catch (OperationCanceledException)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            stuck = p;
            return null;
        }
    }
}
