using System.Text.Json;
using Akka.Actor;
using Akka.Event;
using Akka.Persistence;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Hosting;
using Cluster.Node.Telemetry;
using Distill.Engine.Interop;
using Distill.Engine.Methods;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using Distill.Engine.Training;

namespace Cluster.Node.Actors;

/// <summary>What the coordinator writes and answers about a run: status.json, result.json, metrics, samples, summaries.</summary>
public sealed partial class RunCoordinator
{
    /// <summary>When each run's status.json was last written (progress reports rewrite it at most twice a second).</summary>
    private readonly Dictionary<string, DateTime> statusWritten = [];
    private static readonly TimeSpan StatusInterval = TimeSpan.FromSeconds(0.5);
    /// <summary>Runs whose last report was throttled: their status.json is behind it until <see cref="FlushStatuses"/>.</summary>
    private readonly HashSet<string> statusBehind = [];

    private void FlushStatuses()
    {
        foreach (var id in statusBehind.ToList())
            if (state.Runs.TryGetValue(id, out var r)) WriteStatus(r, throttle: false);
        statusBehind.Clear();
    }

    /// <summary>runs/&lt;id&gt;/status.json: what `status` shows, for dashboards and scripts that do not join the cluster.</summary>
    private void WriteStatus(RunRecord r, bool throttle)
    {
        var now = DateTime.UtcNow;
        if (throttle && statusWritten.TryGetValue(r.RunId, out var last) && now - last < StatusInterval)
        {
            // written once the interval is over, or at a stop, so that the file does not lag its run's last report
            statusBehind.Add(r.RunId);
            if (!Timers.IsTimerActive("status")) Timers.StartSingleTimer("status", FlushStatus.Instance, StatusInterval);
            return;
        }
        statusWritten[r.RunId] = now;
        statusBehind.Remove(r.RunId);
        var s = Summary(r);
        RunGauges(s);
        var dir = Path.Combine(services.Options.RunsDir, r.RunId);
        Directory.CreateDirectory(dir);
        var json = JsonSerializer.Serialize(new
        {
            run_id = s.RunId, state = s.State.Name(), step = s.StudentStep, total_steps = s.TotalSteps,
            generated = s.GeneratedBatches, pool = s.PoolBatches, generator_queue = s.GeneratorQueue, student_in_flight = s.StudentInFlight,
            teacher_accuracy = s.TeacherAccuracy, student_accuracy = s.StudentAccuracy, student_node = s.Node, generator_node = s.GeneratorNode, message = s.Message,
            updated_utc = now,
        });
        var tmp = Path.Combine(dir, $"status.json.{Environment.ProcessId}.tmp");
        FileWrite(r.RunId, "status.json", () =>
        {
            File.WriteAllText(tmp, json);
            File.Move(tmp, Path.Combine(dir, "status.json"), overwrite: true);
        });
    }

    /// <summary>A run's queue depths and step for Prometheus; an ended run's series are removed (a sweep makes thousands of runs).</summary>
    private static void RunGauges(RunSummary s)
    {
        Prometheus.Gauge[] gauges = [NodeMetrics.StudentStep, NodeMetrics.PoolBatches, NodeMetrics.GeneratorQueue, NodeMetrics.StudentInFlight];
        if (s.State.Ended())
        {
            foreach (var g in gauges) g.RemoveLabelled(s.RunId);
            return;
        }
        NodeMetrics.StudentStep.WithLabels(s.RunId).Set(s.StudentStep);
        NodeMetrics.PoolBatches.WithLabels(s.RunId).Set(s.PoolBatches);
        NodeMetrics.GeneratorQueue.WithLabels(s.RunId).Set(s.GeneratorQueue);
        NodeMetrics.StudentInFlight.WithLabels(s.RunId).Set(s.StudentInFlight);
    }

    /// <summary>
    /// Runs by state, after every change of the coordinator's state: an event about one run moves
    /// that run between two counts (a coordinator with ten thousand runs does not recount them per
    /// event); the start, and an event about no one run, count them all.
    /// </summary>
    private void RunStateGauges(IPersistedEvent? changed = null)
    {
        if (changed?.GetType().GetProperty("RunId")?.GetValue(changed) is string id && state.Runs.TryGetValue(id, out var r) && countedStates.Count > 0)
        {
            var now = RunDecisions.StateOf(r, SpecOf(r).Method.UsesTeacher);
            if (countedStates.TryGetValue(id, out var before))
            {
                if (before == now) return;
                NodeMetrics.Runs.WithLabels(before.Name()).Dec();
            }
            countedStates[id] = now;
            NodeMetrics.Runs.WithLabels(now.Name()).Inc();
            return;
        }
        countedStates.Clear();
        foreach (var run in state.Runs.Values) countedStates[run.RunId] = RunDecisions.StateOf(run, SpecOf(run).Method.UsesTeacher);
        var counts = Enum.GetValues<RunState>().ToDictionary(x => x, _ => 0);
        foreach (var x in countedStates.Values) counts[x]++;
        foreach (var (x, n) in counts) NodeMetrics.Runs.WithLabels(x.Name()).Set(n);
    }

    /// <summary>Each run's state as the runs gauge counts it.</summary>
    private readonly Dictionary<string, RunState> countedStates = [];

    private void WriteResult(RunRecord r, StudentFinished m)
    {
        var spec = SpecOf(r);
        var dir = Path.Combine(services.Options.RunsDir, r.RunId);
        Directory.CreateDirectory(dir);
        if (m.StudentBlob.Length > 0 && services.Blobs.Exists(m.StudentBlob))
        {
            File.WriteAllBytes(Path.Combine(dir, "student.pt"), services.Blobs.Get(m.StudentBlob));
            StudentExport.Write(Path.Combine(dir, "student.pt"), dir);
        }
        // the student's Accuracy is the validation split's where the spec holds one out
        var test = spec.Data.Validation > 0 ? m.TestAccuracy : m.Accuracy;
        var testImages = DataSplits.TestImages(spec.Data);
        var result = new RunResult
        {
            RunId = r.RunId,
            Name = spec.Name,
            Method = spec.Method.Name,
            Dataset = spec.Data.Name,
            TeacherArch = spec.Method.TeacherOf(spec)?.Arch,
            StudentArch = spec.Student.Arch,
            TeacherAccuracy = r.TeacherAccuracy,
            TeacherSeconds = r.TeacherSeconds,
            TeacherFromCache = r.TeacherFromCache,
            StudentAccuracy = test ?? double.NaN,
            BestStudentAccuracy = m.BestAccuracy,
            ValidationAccuracy = spec.Data.Validation > 0 ? m.Accuracy : null,
            TestImages = testImages,
            StudentTestErrors = testImages is { } n && test is { } a ? Evaluation.Errors(a, n) : null,
            TeacherTestErrors = testImages is { } tn && r.TeacherAccuracy is { } ta ? Evaluation.Errors(ta, tn) : null,
            Steps = m.Steps,
            WallSeconds = Math.Round((DateTime.UtcNow - r.SubmittedUtc).TotalSeconds, 1),
            Device = spec.Device,
            Seed = spec.Seed,
            StudentUsedRealData = spec.Method.StudentSeesData,
            Rollbacks = m.Rollbacks,
            SourceRollbacks = live.TryGetValue(r.RunId, out var l) ? l.SourceRollbacks : null,
            SynthesisedImages = spec.Method.SynthesisedImages(spec, m.Steps),
            Pipeline = $"actors ({spec.Cluster.Replicas} student replica(s))",
        };
        RunDirectory.WriteResult(dir, WithBaseline(result, r.RunId));
    }

    /// <summary>
    /// A row of metrics.csv: phase is the entity kind (generator, student-N), seconds count from
    /// the run's submission to when the row was made. A step run again after a failover or a guard
    /// rollback is logged again; the same report sent again is not (<see cref="ReportLedger"/>).
    /// Rows that come after their run ended (held by an entity while the coordinator was away) are
    /// written too.
    /// </summary>
    private void OnMetrics(RunMetrics m)
    {
        if (m.Names.Length != m.Values.Length)
        {
            log.Warning("run {0}: metrics from {1} with {2} names and {3} values; dropped", m.RunId, m.EntityId, m.Names.Length, m.Values.Length);
            Acknowledge(m.RunId, m.EntityId, m.Report);
            return;
        }
        if (Admit(m.RunId, m.EntityId, m.Report) is not var (r, phase)) return;
        var values = new Dictionary<string, double>(m.Names.Length);
        for (var i = 0; i < m.Names.Length; i++) values[m.Names[i]] = m.Values[i];
        var seconds = Math.Max(0, (DateTime.UtcNow - r.SubmittedUtc).TotalSeconds - (m.Report?.AgeSeconds ?? 0));
        // not written (a full disk): not acknowledged either, so the entity sends it again
        if (!FileWrite(m.RunId, "metrics.csv", () => Dir(m.RunId).Metrics(phase, m.Step, seconds, values, RunDirectory.KnownColumns))) return;
        if (r.Active && r.SweepId is { } sweep && phase == "student-0") services.Sweeps.Tell(new TrialMetrics(sweep, m.RunId, m.Step, m.Names, m.Values));
        Written(r, m.EntityId, m.Report);
    }

    private void OnSamples(RunSamples m)
    {
        if (Admit(m.RunId, m.EntityId, m.Report) is not var (r, phase)) return;
        if (!FileWrite(m.RunId, "samples/", () => Dir(m.RunId).Samples(phase, m.Step, m.Png))) return;
        Written(r, m.EntityId, m.Report);
    }

    /// <summary>When each run's last file-write failure was logged (a full disk fails every write: one warning a minute, not a stack trace each).</summary>
    private readonly Dictionary<string, DateTime> writeFailureLogged = [];

    /// <summary>
    /// A write of a run's files, which a full or read-only disk must not turn into a crash (the
    /// coordinator restarted at once and failed again at its first status write, with a stack
    /// trace each time: 30 MB of log in 40 s). False when it failed: a report is then not
    /// acknowledged, and its entity sends it again.
    /// </summary>
    private bool FileWrite(string runId, string what, Action write)
    {
        try
        {
            write();
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // a writer that failed mid-line starts again from the file as it is
            CloseDir(runId);
            var now = DateTime.UtcNow;
            if (!writeFailureLogged.TryGetValue(runId, out var last) || now - last > TimeSpan.FromMinutes(1))
            {
                writeFailureLogged[runId] = now;
                log.Warning("run {0}: {1} not written ({2}); rows and grids are kept by their entities and written once the disk takes them (said once a minute)",
                    runId, what, e.Message);
            }
            return false;
        }
    }

    /// <summary>Open ledgers of the reports in each run's files, by run.</summary>
    private readonly Dictionary<string, ReportLedger> ledgers = [];

    private ReportLedger Ledger(string runId)
    {
        if (ledgers.TryGetValue(runId, out var l)) return l;
        l = ReportLedger.Open(Path.Combine(services.Options.RunsDir, runId), out var problem);
        if (problem is not null) log.Warning("run {0}: {1}", runId, problem);
        return ledgers[runId] = l;
    }

    /// <summary>
    /// The run and the file name's phase for a report to write; null for one that is not written:
    /// already written (acknowledged again), after a report not yet had (the entity is asked for what
    /// it holds), or not this coordinator's to write (an unknown run or entity: acknowledged, so that
    /// its sender lets it go).
    /// </summary>
    private (RunRecord Run, string Phase)? Admit(string runId, string entityId, ReportHeader? report)
    {
        if (!state.Runs.TryGetValue(runId, out var r) || Phase(runId, entityId) is not { } phase)
        {
            Acknowledge(runId, entityId, report);
            return null;
        }
        var ledger = Ledger(runId);
        switch (ledger.Judge(entityId, report))
        {
            case ReportLedger.Verdict.Known:
                Sender.Tell(new ReportsReceived(runId, entityId, ledger.WrittenUpTo(entityId)));
                return null;
            case ReportLedger.Verdict.Missing:
                Sender.Tell(new ReportsReceived(runId, entityId, ledger.WrittenUpTo(entityId), Missing: true));
                return null;
            default:
                return (r, phase);
        }
    }

    /// <summary>The report is in the run's files: the ledger records it, then the entity is told; an ended run's files are closed again.</summary>
    private void Written(RunRecord r, string entityId, ReportHeader? report)
    {
        if (report is not null)
        {
            try { Ledger(r.RunId).Wrote(entityId, report.Seq); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                log.Warning("run {0}: {1} not updated ({2}); a row sent again may be written twice", r.RunId, ReportLedger.FileName, e.Message);
            }
            Sender.Tell(new ReportsReceived(r.RunId, entityId, report.Seq));
        }
        if (!r.Active) CloseDir(r.RunId);
    }

    private void Acknowledge(string runId, string entityId, ReportHeader? report)
    {
        if (report is not null) Sender.Tell(new ReportsReceived(runId, entityId, report.Seq));
    }

    /// <summary>
    /// A run's last figures as its status.json kept them (step, accuracy, nodes), for a coordinator
    /// that started after the run ended or stopped: until its entities report again, if ever. Read once.
    /// </summary>
    private Live? LastShown(string runId)
    {
        var l = new Live();
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(services.Options.RunsDir, runId, "status.json")));
            var root = doc.RootElement;
            l.StudentStep = root.TryGetProperty("step", out var step) && step.TryGetInt64(out var s) ? s : 0;
            l.TotalSteps = root.TryGetProperty("total_steps", out var total) && total.TryGetInt64(out var t) ? t : 0;
            l.Generated = root.TryGetProperty("generated", out var made) && made.TryGetInt64(out var g) ? g : 0;
            l.Accuracy = root.TryGetProperty("student_accuracy", out var acc) && acc.ValueKind == JsonValueKind.Number ? acc.GetDouble() : null;
            l.Node = root.TryGetProperty("student_node", out var node) && node.ValueKind == JsonValueKind.String ? node.GetString() : null;
            l.GeneratorNode = root.TryGetProperty("generator_node", out var gnode) && gnode.ValueKind == JsonValueKind.String ? gnode.GetString() : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or InvalidOperationException) { }
        return live[runId] = l;
    }

    /// <summary>The entity's kind (student-N for a replica) as the file names and the CSV show it; null for an id that is not this run's entity.</summary>
    private string? Phase(string runId, string entityId)
    {
        EntityId id;
        try { id = EntityId.Parse(entityId); }
        catch (FormatException e) { log.Warning("run {0}: {1}; report dropped", runId, e.Message); return null; }
        if (id.RunId != runId) { log.Warning("run {0}: a report from {1}, another run's entity; dropped", runId, entityId); return null; }
        return id.Kind == EntityKinds.Student ? $"student-{id.Index}" : id.Kind;
    }

    private RunSummary Summary(RunRecord r)
    {
        var spec = SpecOf(r);
        var runState = RunDecisions.StateOf(r, spec.Method.UsesTeacher);
        var ended = runState.Ended();
        // a run no entity has reported on since this coordinator started (it ended before, or it
        // stopped and is being resumed or cancelled through its journal): the figures status.json kept, not zeros
        var l = live.GetValueOrDefault(r.RunId) ?? LastShown(r.RunId);
        return new RunSummary(r.RunId, spec.Name, spec.Method.Name, runState,
            r.Completed || r.Paused ? r.Steps : l?.StudentStep ?? 0, l?.TotalSteps is > 0 ? l.TotalSteps : spec.Method.PipelineStudentSteps(spec, Distill.Engine.Training.DataSplits.TrainImages(spec.Data) ?? 0),
            l?.Generated ?? 0, ended ? 0 : l?.Pool ?? 0, ended ? 0 : l?.GeneratorQueue ?? 0, ended ? 0 : l?.InFlight ?? 0,
            r.TeacherAccuracy, r.Completed ? r.Accuracy : l?.Accuracy,
            r.Message ?? (r.Active ? RunDecisions.Waiting(spec, HostedKinds(), LeftLately()) : null)
                ?? (r.Active && r.Queued ? RunDecisions.QueuedMessage(state, r, Slots()) : null) ?? l?.Message, l?.Node, l?.GeneratorNode,
            r.Paused ? r.PausedStudentBlob : null, r.Paused ? r.PausedSourceBlob : null);
    }
}
