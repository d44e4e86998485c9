using System.Diagnostics;
using Cluster.Node.Telemetry;
using Xunit;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The GPU memory gauges' reading of nvidia-smi. The text below is in the form nvidia-smi prints
/// for <see cref="GpuMemory.DeviceQuery"/> and <see cref="GpuMemory.ProcessQuery"/> (CSV, no
/// header, MiB without units), with the cells it prints where it cannot tell ("[N/A]"). The
/// reading on a real GPU is part of tools/gpu-check.sh.
/// </summary>
public class GpuMemoryTests
{
    private const string Devices = """
        GPU-6f1c0a4e-2b7d-4d0b-9d58-0a1b2c3d4e5f, 40532, 81559
        GPU-a9e3d2c1-7f6b-4e5d-8c9b-1a2b3c4d5e6f, 0, 81559

        """;

    [Fact]
    public void Each_device_has_its_used_and_total_bytes_and_this_process_its_own_summed_over_its_contexts()
    {
        const string processes = """
            4242, GPU-6f1c0a4e-2b7d-4d0b-9d58-0a1b2c3d4e5f, 30000
            4242, GPU-6f1c0a4e-2b7d-4d0b-9d58-0a1b2c3d4e5f, 512
            977, GPU-6f1c0a4e-2b7d-4d0b-9d58-0a1b2c3d4e5f, 10020
            """;
        var r = GpuMemory.Parse(Devices, processes, pid: 4242);
        Assert.Equal(2, r.Count);
        Assert.Equal(new GpuMemory.Reading("GPU-6f1c0a4e-2b7d-4d0b-9d58-0a1b2c3d4e5f", 40532.0 * 1048576, 81559.0 * 1048576, 30512.0 * 1048576), r[0]);
        // a device this process holds nothing on has no process figure, not 0 from another's line
        Assert.Equal(new GpuMemory.Reading("GPU-a9e3d2c1-7f6b-4e5d-8c9b-1a2b3c4d5e6f", 0, 81559.0 * 1048576, null), r[1]);
    }

    [Fact]
    public void A_process_nvidia_smi_does_not_list_as_ours_gets_device_figures_only()
    {
        // in a container nvidia-smi gives the host's PIDs, or an empty list
        foreach (var processes in new[] { "", "31337, GPU-6f1c0a4e-2b7d-4d0b-9d58-0a1b2c3d4e5f, 30000\n" })
        {
            var r = GpuMemory.Parse(Devices, processes, pid: 12);
            Assert.Equal(2, r.Count);
            Assert.All(r, x => Assert.Null(x.ProcessBytes));
            Assert.Equal(40532.0 * 1048576, r[0].UsedBytes);
        }
    }

    [Fact]
    public void Cells_nvidia_smi_cannot_fill_and_lines_of_another_shape_give_no_figure()
    {
        const string devices = """
            GPU-6f1c0a4e-2b7d-4d0b-9d58-0a1b2c3d4e5f, [N/A], 81559
            GPU-a9e3d2c1-7f6b-4e5d-8c9b-1a2b3c4d5e6f, 100, 81559
            No devices were found
            GPU-x, 1, 2, 3
            """;
        const string processes = "12, GPU-a9e3d2c1-7f6b-4e5d-8c9b-1a2b3c4d5e6f, [N/A]\n";
        var r = Assert.Single(GpuMemory.Parse(devices, processes, pid: 12));
        Assert.Equal("GPU-a9e3d2c1-7f6b-4e5d-8c9b-1a2b3c4d5e6f", r.Device);
        Assert.Equal(100.0 * 1048576, r.UsedBytes);
        Assert.Null(r.ProcessBytes);
    }

    /// <summary>The gauges show the last reading only: a device or this process's line that is gone, or a failed reading, removes the figure instead of leaving an old one.</summary>
    [Fact]
    public void The_gauges_show_the_last_reading_and_nothing_older()
    {
        static string[] Shown(Prometheus.Gauge g) => g.GetAllLabelValues().Select(v => v[0]).Order().ToArray();
        var samples = new NodeMetrics.GpuSamples();
        samples.Show([new("GPU-a", 10, 100, 4), new("GPU-b", 20, 100, null)]);
        Assert.Equal(["GPU-a", "GPU-b"], Shown(NodeMetrics.GpuDeviceUsedBytes));
        Assert.Equal(["GPU-a", "GPU-b"], Shown(NodeMetrics.GpuDeviceTotalBytes));
        Assert.Equal(["GPU-a"], Shown(NodeMetrics.GpuMemoryBytes));
        Assert.Equal(4, NodeMetrics.GpuMemoryBytes.WithLabels("GPU-a").Value);
        // this process no longer listed, GPU-b gone
        samples.Show([new("GPU-a", 12, 100, null)]);
        Assert.Equal(["GPU-a"], Shown(NodeMetrics.GpuDeviceUsedBytes));
        Assert.Equal(12, NodeMetrics.GpuDeviceUsedBytes.WithLabels("GPU-a").Value);
        Assert.Empty(Shown(NodeMetrics.GpuMemoryBytes));
        // nvidia-smi failed or hung: no figure at all
        samples.Show(null);
        Assert.Empty(Shown(NodeMetrics.GpuDeviceUsedBytes));
        Assert.Empty(Shown(NodeMetrics.GpuDeviceTotalBytes));
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task No_nvidia_smi_a_failing_one_and_a_hanging_one_give_no_reading_within_seconds()
    {
        Assert.Null(await GpuMemory.Query(CancellationToken.None, "/nonexistent/nvidia-smi"));
        var dir = Directory.CreateTempSubdirectory("cd-nvsmi-");
        try
        {
            var failing = Script(dir.FullName, "failing", "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9");
            Assert.Null(await GpuMemory.Query(CancellationToken.None, failing));
            var hanging = Script(dir.FullName, "hanging", "exec sleep 60");
            var clock = Stopwatch.StartNew();
            Assert.Null(await GpuMemory.Query(CancellationToken.None, hanging));
            Assert.InRange(clock.Elapsed.TotalSeconds, 1.5, 10);
        }
        finally { dir.Delete(recursive: true); }
    }

    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    private static string Script(string dir, string name, string body)
    {
        var path = Path.Combine(dir, name);
        File.WriteAllText(path, "#!/bin/sh\n" + body + "\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }
}
