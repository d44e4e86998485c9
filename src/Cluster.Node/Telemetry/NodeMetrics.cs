using Prometheus;

namespace Cluster.Node.Telemetry;

/// <summary>
/// The node's Prometheus metrics (prometheus-net, served at /metrics): what the entities and the
/// coordinators on this node do. Counters are per run; rates (steps/s, images/s) are Prometheus's
/// rate() of them. The runtime's event counters and meters are not collected: their listener
/// threads would run beside the compute thread.
/// </summary>
public static class NodeMetrics
{
    static NodeMetrics() =>
        Metrics.SuppressDefaultMetrics(new SuppressDefaultMetricOptions { SuppressEventCounters = true, SuppressMeters = true, SuppressDebugMetrics = true });

    private static readonly string[] Run = ["run"];

    /// <summary>Makes sure the class is initialised (and the defaults suppressed) before the first scrape.</summary>
    public static void Register() { }

    public static readonly Counter StudentSteps = Metrics.CreateCounter("clusterdistill_student_steps_total",
        "Student optimiser steps taken on this node (replica 0 only: one per step of the run)", Run);

    public static readonly Counter StudentImages = Metrics.CreateCounter("clusterdistill_student_images_total",
        "Images the students on this node trained on (every replica)", Run);

    public static readonly Counter GeneratedBatches = Metrics.CreateCounter("clusterdistill_generated_batches_total",
        "Batches the sources on this node made (synthesised or loaded)", Run);

    public static readonly Gauge PoolBatches = Metrics.CreateGauge("clusterdistill_pool_batches",
        "Batches held in the run's pool, as the coordinator last heard", Run);

    public static readonly Gauge GeneratorQueue = Metrics.CreateGauge("clusterdistill_generator_queue",
        "Batches asked of the run's source and not yet made", Run);

    public static readonly Gauge StudentInFlight = Metrics.CreateGauge("clusterdistill_student_in_flight",
        "Batches sent to the run's student and not yet trained", Run);

    public static readonly Gauge StudentStep = Metrics.CreateGauge("clusterdistill_student_step",
        "The run's student step, as the coordinator last heard", Run);

    public static readonly Histogram CheckpointSeconds = Metrics.CreateHistogram("clusterdistill_checkpoint_write_seconds",
        "Time to write a checkpoint (the blob, then its event in the journal)",
        new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.001, 2, 14), LabelNames = ["kind"] });

    public static readonly Histogram JournalSeconds = Metrics.CreateHistogram("clusterdistill_journal_write_seconds",
        "Time from Persist to its handler (the journal's write, as the entity sees it)",
        new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.0005, 2, 16), LabelNames = ["kind"] });

    public static readonly Counter Rollbacks = Metrics.CreateCounter("clusterdistill_rollbacks_total",
        "Rollbacks: a student's by the divergence guard (guard) or to stay in lockstep with a replica (lockstep); a source's by the guard on its own metrics (source-guard)", ["run", "why"]);

    public static readonly Counter Failovers = Metrics.CreateCounter("clusterdistill_failovers_total",
        "Entities that resumed from their journal on this node after starting elsewhere or before (a node died, a process restarted)", ["run", "kind"]);

    /// <summary>The counters labelled by run (their first label) that the entities on a node move.</summary>
    private static readonly Counter[] RunCounters = [StudentSteps, StudentImages, GeneratedBatches, Rollbacks, Failovers];

    /// <summary>How long a run's counters stay on a node after its entities there stopped for good: a few scrapes read their last values.</summary>
    public static readonly TimeSpan EndedRunKept = TimeSpan.FromMinutes(5);

    /// <summary>
    /// The run ended (an entity of it got its stop): its counters on this node are removed after
    /// `after` (<see cref="EndedRunKept"/>), so that a long sweep does not leave a series per trial on
    /// every node for the process's life. Removing them at once would lose the last increments
    /// before Prometheus's next scrape.
    /// </summary>
    public static void RetireRun(string runId, TimeSpan? after = null) =>
        _ = Task.Delay(after ?? EndedRunKept).ContinueWith(_ => RemoveRun(runId), TaskScheduler.Default);

    /// <summary>Removes every series of the run's counters on this node.</summary>
    public static void RemoveRun(string runId)
    {
        foreach (var c in RunCounters)
            foreach (var labels in c.GetAllLabelValues().Where(l => l.Length > 0 && l[0] == runId).ToList())
                c.RemoveLabelled(labels);
    }

    public static readonly Gauge Trials = Metrics.CreateGauge("clusterdistill_trials",
        "A sweep's trials by state", ["sweep", "state"]);

    public static readonly Gauge Runs = Metrics.CreateGauge("clusterdistill_runs",
        "Runs the coordinator knows, by state", ["state"]);

    public static readonly Gauge EventStreams = Metrics.CreateGauge("clusterdistill_http_event_streams",
        "Clients reading the live event stream (/api/stream) from this node: open dashboards and followers");

    public static readonly Gauge GpuMemoryBytes = Metrics.CreateGauge("clusterdistill_gpu_memory_bytes",
        "GPU memory this process holds, per device, as nvidia-smi reports it (absent without a GPU, and where nvidia-smi does not list this process, as in most containers)", ["device"]);

    public static readonly Gauge GpuDeviceUsedBytes = Metrics.CreateGauge("clusterdistill_gpu_device_memory_used_bytes",
        "GPU memory in use on each device this node sees, by every process, as nvidia-smi reports it", ["device"]);

    public static readonly Gauge GpuDeviceTotalBytes = Metrics.CreateGauge("clusterdistill_gpu_device_memory_total_bytes",
        "GPU memory of each device this node sees", ["device"]);

    private static int gpuTracked;

    /// <summary>On a node with CUDA: GPU memory is read from nvidia-smi at each scrape (<see cref="GpuMemory"/>).</summary>
    public static void TrackGpuMemory()
    {
        if (Interlocked.Exchange(ref gpuTracked, 1) == 1) return;
        var shown = new GpuSamples();
        Metrics.DefaultRegistry.AddBeforeCollectCallback(async ct => shown.Show(await GpuMemory.Query(ct)));
    }

    /// <summary>
    /// The GPU gauges as the last reading has them: a figure it lacks (nvidia-smi failed or hung, a
    /// device gone, this process no longer listed) is removed, never left at an old value.
    /// </summary>
    internal sealed class GpuSamples
    {
        private readonly HashSet<string> devices = [], own = [];

        public void Show(IReadOnlyList<GpuMemory.Reading>? readings)
        {
            var now = readings ?? [];
            foreach (var gone in devices.Except(now.Select(r => r.Device)).ToList())
            {
                GpuDeviceUsedBytes.RemoveLabelled(gone);
                GpuDeviceTotalBytes.RemoveLabelled(gone);
                devices.Remove(gone);
            }
            foreach (var gone in own.Except(now.Where(r => r.ProcessBytes is not null).Select(r => r.Device)).ToList())
            {
                GpuMemoryBytes.RemoveLabelled(gone);
                own.Remove(gone);
            }
            foreach (var r in now)
            {
                GpuDeviceUsedBytes.WithLabels(r.Device).Set(r.UsedBytes);
                GpuDeviceTotalBytes.WithLabels(r.Device).Set(r.TotalBytes);
                devices.Add(r.Device);
                if (r.ProcessBytes is not { } bytes) continue;
                GpuMemoryBytes.WithLabels(r.Device).Set(bytes);
                own.Add(r.Device);
            }
        }
    }
}
