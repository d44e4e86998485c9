using Akka.Actor;
using Akka.Event;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Storage;
using Distill.Engine.Specs;
using Distill.Engine.Sweeps;

using Cluster.Node.Telemetry;

namespace Cluster.Node.Actors;

/// <summary>sweeps/&lt;id&gt;/: the tables and plots, rewritten as the sweep goes, and each trial's TensorBoard scalars.</summary>
public sealed partial class SweepCoordinator
{
    /// <summary>When each sweep's files were last written: at most every 2 s while it runs (a large sweep's table is megabytes).</summary>
    private readonly Dictionary<string, DateTime> written = [];

    /// <summary>A write held back by the 2-s limit, made when the limit has passed.</summary>
    private sealed record FlushFiles(string SweepId) : INoSerializationVerificationNeeded;

    private void ReceiveFiles() => Command<FlushFiles>(f =>
    {
        if (state.Sweeps.TryGetValue(f.SweepId, out var r)) WriteFiles(r, Runtime(r), plots: false);
    });

    private void WriteFiles(SweepRecord r, SweepRuntime rt, bool plots)
    {
        foreach (var st in Enum.GetValues<TrialState>())
            NodeMetrics.Trials.WithLabels(r.SweepId, st.ToString().ToLowerInvariant()).Set(r.Trials.Count(t => SweepDecisions.Shown(t, queuedRuns) == st));
        var now = DateTime.UtcNow;
        if (r.Running && written.TryGetValue(r.SweepId, out var last) && now - last < TimeSpan.FromSeconds(2))
        {
            // held back, not dropped: the files never lag the journal by more than the limit
            if (!Timers.IsTimerActive("files-" + r.SweepId))
                Timers.StartSingleTimer("files-" + r.SweepId, new FlushFiles(r.SweepId), TimeSpan.FromSeconds(2) - (now - last));
            return;
        }
        written[r.SweepId] = now;
        try { SweepFiles.Write(services.Options.SweepsPath, r, rt, plots || r.Trials.Count <= 100 && r.Trials.Count(t => t.Ended) > plotted.GetValueOrDefault(r.SweepId)); }
        catch (IOException e) { log.Warning("sweep {0}: files not written: {1}", r.SweepId, e.Message); }
        plotted[r.SweepId] = r.Trials.Count(t => t.Ended);
    }

    /// <summary>The files as each running sweep stands when the node stops (Ctrl+C, a shutdown), whatever the limit held back.</summary>
    protected override void PostStop()
    {
        foreach (var r in state.Sweeps.Values.Where(s => s.Running))
        {
            written.Remove(r.SweepId);
            try { WriteFiles(r, Runtime(r), plots: false); }
            catch (Exception e) when (e is SpecException or InvalidOperationException) { log.Warning("sweep {0}: files not written at stop: {1}", r.SweepId, e.Message); }
        }
        base.PostStop();
    }

    /// <summary>Ended trials when the plots were last drawn, by sweep (they are drawn again only when one more has ended).</summary>
    private readonly Dictionary<string, int> plotted = [];

    /// <summary>Each trial's TensorBoard writer (sweeps/&lt;id&gt;/tensorboard/&lt;trial&gt;/): TensorBoard pointed at the folder compares the trials.</summary>
    private readonly Dictionary<string, TorchSharp.Modules.SummaryWriter> boards = [];

    private void Board(TrialReported p, string metric)
    {
        try
        {
            var key = $"{p.SweepId}/{p.TrialId}";
            if (!boards.TryGetValue(key, out var w))
                boards[key] = w = TorchSharp.torch.utils.tensorboard.SummaryWriter(Path.Combine(services.Options.SweepsPath, p.SweepId, "tensorboard", p.TrialId));
            w.add_scalar(metric, (float)p.Value, (int)Math.Min(p.Step, int.MaxValue));
        }
        catch (IOException e) { log.Warning("sweep {0}: TensorBoard file of {1} not written: {2}", p.SweepId, p.TrialId, e.Message); }
    }
}
