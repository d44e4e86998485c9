using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Akka.Persistence;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Tensors;
using Cluster.Node.Hosting;
using Cluster.Node.Storage;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Pipeline;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using TorchSharp;

namespace Cluster.Node.Actors;

/// <summary>
/// A run's teacher (sharded entity "run/teacher/0"). Asked to start without a teacher, it obtains
/// one (the spec's checkpoint, the teacher cache, or training) and stores it as a blob; then it
/// labels batches with the teacher's probabilities at temperature T and sends them on to the
/// student that asked. Labels of recent batches are kept, so replicas of a student asking for the
/// same batch cost one forward pass.
/// </summary>
public sealed class TeacherEntity : PersistentEntity, IWithStash
{
    public static Props GetProps(string entityId, NodeServices services) => Props.Create(() => new TeacherEntity(entityId, services));

    private sealed record TeacherTrained(string Blob, double Accuracy, double Seconds, bool FromCache) : INoSerializationVerificationNeeded;
    /// <summary>Restored: how the teacher's blob was made good again, when it was missing or corrupt.</summary>
    private sealed record TeacherLoaded(Classifier Teacher, string? Restored) : INoSerializationVerificationNeeded;
    private sealed record Labelled(LabelBatch Request, TensorPayload Labels) : INoSerializationVerificationNeeded;
    /// <summary>A metrics row of the teacher's training, from the compute thread: the entity journals and sends it.</summary>
    private sealed record TrainingRow(string RunId, long Step, IReadOnlyDictionary<string, double> Values) : INoSerializationVerificationNeeded;

    private RunSpec? spec;
    private Classifier? teacher;
    private bool preparing;
    /// <summary>The teacher could not be prepared or loaded; the run has been told it failed.</summary>
    private bool failed;
    private readonly Dictionary<long, TensorPayload> recent = [];

    public TeacherEntity(string entityId, NodeServices services) : base(entityId, services)
    {
        Command<StartEntity>(OnStart);
        Command<TeacherTrained>(OnTrained);
        Command<TrainingRow>(r => Report(RunMetrics.Of(r.RunId, Id, r.Step, r.Values)));
        Command<TeacherLoaded>(l =>
        {
            // the run ended while this loaded (a stop woke the passivated entity)
            if (State.Finished) { EngineAccess.Release(() => l.Teacher.Dispose()); return; }
            teacher = l.Teacher;
            Log.Info("{0}: teacher loaded", Id);
            if (l.Restored is { } how)
            {
                Log.Warning("{0}: {1}", Id, how);
                Services.Coordinator.Tell(new EntityProgress(State.RunId!, Id, 0, 0, 0, 0, null, Services.NodeName, how));
            }
            Stash.UnstashAll();
        });
        Command<LabelBatch>(OnLabel);
        Command<Labelled>(OnLabelled);
        Command<Status.Failure>(f =>
        {
            var loading = !preparing;
            preparing = false;
            // the run cannot go on without its teacher: no label request waits for one
            failed = true;
            Stash.ClearStash();
            ReportFailure(loading ? $"the teacher could not be loaded: {f.Cause.Message}" : $"the teacher could not be prepared: {f.Cause.Message}");
        });
        Command<GetEntityStatus>(_ => Sender.Tell(new EntityStatus(Id, State.Started, 0, 0, 0, 0, Services.NodeName,
            failed ? "failed" : teacher is not null ? "labelling" : preparing ? "preparing teacher" : "waiting")));
        Command<StopEntity>(_ => Persist(new EntityFinished(0), e =>
        {
            State = State.Apply(e);
            Context.Parent.Tell(new Passivate(PoisonPill.Instance));
        }));
    }

    protected override void OnRecovered()
    {
        if (State.TeacherBlob is not null && !State.Finished) Load();
    }

    private void OnStart(StartEntity m)
    {
        if (State.TeacherBlob is not null)
        {
            // started before: tell the coordinator again (it may have missed the first answer)
            Services.Coordinator.Tell(new TeacherReady(State.RunId!, State.TeacherBlob, State.Checkpoints.LastOrDefault()?.Accuracy ?? 0));
            return;
        }
        if (m.TeacherBlob is not null)
        {
            // the coordinator already has the teacher (this entity's journal was lost or is new): use it
            Persist(new EntityStarted(m.RunId, m.SpecYaml, m.TeacherBlob), e => { State = State.Apply(e); Load(); });
            return;
        }
        if (preparing) return;
        RunSpec s;
        try { s = EngineAccess.ParseSpec(m.SpecYaml, m.RunId); }
        catch (Exception e) { Services.Coordinator.Tell(new EntityFailed(m.RunId, Id, $"spec unusable on this node: {e.Message}")); return; }
        preparing = true;
        // The run directory's files are the coordinator's: this entity trains in a folder of its own
        // (its checkpoints and events) and sends its metrics rows to the coordinator.
        var workDir = Path.Combine(Services.Options.RunsDir, m.RunId, "teacher");
        var runId = m.RunId;
        var yaml = m.SpecYaml;
        var coordinator = Services.Coordinator;
        var entity = Self;
        var self = Id;
        var node = Services.NodeName;
        EngineAccess.Compute(Self, () =>
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            // its events (what it loaded, where it resumed) are the run's too: the coordinator writes them to its events.log
            var (t, acc, fromCache, earlier) = NewRunner(runId).PrepareTeacher(s, Services.Data(s.Data), workDir,
                (_, step, values) => entity.Tell(new TrainingRow(runId, step, new Dictionary<string, double>(values))),
                message => coordinator.Tell(new EntityProgress(runId, self, 0, 0, 0, 0, null, node, message)));
            using (t)
            {
                var blob = Services.Blobs.Put(EngineAccess.SaveModel(t));
                // earlier commands' training too, where this one went on from their checkpoint
                return new TeacherTrained(blob, acc, Math.Round(earlier + clock.Elapsed.TotalSeconds, 1), fromCache);
            }
        });
        // remember the run now, so that a restart knows what it was preparing
        if (!State.Started) Persist(new EntityStarted(runId, yaml, null), e => State = State.Apply(e));
    }

    private void OnTrained(TeacherTrained t)
    {
        preparing = false;
        // the accuracy rides in a checkpoint record so that a restarted teacher can report it again
        Persist(new EntityStarted(State.RunId!, State.SpecYaml!, t.Blob), e =>
        {
            State = State.Apply(e);
            Persist(new CheckpointWritten(0, 0, t.Blob, t.Accuracy, t.Accuracy), c => State = State.Apply(c));
            Services.Coordinator.Tell(new TeacherReady(State.RunId!, t.Blob, t.Accuracy, t.Seconds, t.FromCache));
            Load();
        });
    }

    private Runner NewRunner(string runId) =>
        new(new RunnerOptions { RunsRoot = Services.Options.RunsDir, DataCache = Services.Options.DataCache, TeacherCache = Services.Options.TeacherCache },
            new RunLogWriter(Services.Options.LogFormat, runId));

    private void Load()
    {
        spec = EngineAccess.ParseSpec(State.SpecYaml!, State.RunId!);
        var (s, blob, runId) = (spec, State.TeacherBlob!, State.RunId!);
        var copies = TeacherCopies.Candidates(Services.Options, s, runId);
        EngineAccess.Compute(Self, () =>
        {
            var device = EngineAccess.DeviceFor(s);
            string? restored;
            byte[] weights;
            try { weights = TeacherCopies.Read(Services.Blobs, blob, copies, out restored); }
            catch (BlobException lost) { weights = PrepareAgain(s, blob, runId, lost.Message, out restored); }
            var t = EngineAccess.LoadModel(s.Method.TeacherOf(s)!.Arch, Services.Data(s.Data), s.Data.ImageSize, weights, device);
            SourceTrainer.Freeze(t);
            return new TeacherLoaded(t, restored);
        });
    }

    /// <summary>
    /// No copy of the teacher is left: it is prepared again as at the start (checkpoint, cache or
    /// training, which is deterministic on one machine). Only the same weights, bit for bit, may
    /// stand in for the lost ones: the run's batches were labelled by them.
    /// </summary>
    private byte[] PrepareAgain(RunSpec s, string blob, string runId, string lost, out string restored)
    {
        var workDir = Path.Combine(Services.Options.RunsDir, runId, "teacher");
        var (t, _, fromCache, _) = NewRunner(runId).PrepareTeacher(s, Services.Data(s.Data), workDir);
        using (t)
        {
            var weights = EngineAccess.SaveModel(t);
            var how = s.Method.TeacherOf(s)!.Checkpoint is not null ? "loaded again from its checkpoint" : fromCache ? "loaded again from the teacher cache" : "trained again";
            if (BlobStore.Hash(weights) != blob)
                throw new InvalidDataException($"{lost}; {how}, it is another teacher (its weights hash to {BlobStore.Hash(weights)[..12]}, not {blob[..12]}), and the run's batches were labelled by the lost one");
            Services.Blobs.Restore(weights);
            restored = $"{lost}; {how}: the same weights bit for bit (SHA-256 {blob[..12]}), restored";
            return weights;
        }
    }

    private void OnLabel(LabelBatch m)
    {
        if (failed) { Log.Warning("{0}: batch {1} not labelled: the teacher failed", Id, m.Seq); return; }
        if (teacher is null) { Stash.Stash(); return; }
        if (recent.TryGetValue(m.Seq, out var cached))
        {
            Services.Students.Tell(new LabelledBatch(m.ReplyTo, m.Seq, m.Images, cached, m.Temperature, m.Labels));
            return;
        }
        var t = teacher;
        var s = spec!;
        EngineAccess.Compute(Self, () =>
        {
            var device = EngineAccess.DeviceFor(s);
            using var images = TensorWire.ToTensor(m.Images, device);
            using var probs = SoftLabels.Label(t, images, m.Temperature);
            return new Labelled(m, TensorWire.ToPayload(probs, TensorWire.Parse(s.Cluster.SoftLabels)));
        });
    }

    private void OnLabelled(Labelled l)
    {
        recent[l.Request.Seq] = l.Labels;
        var keep = 4 * spec!.Cluster.Replicas + spec.Cluster.Window;
        if (recent.Count > keep) foreach (var k in recent.Keys.Order().Take(recent.Count - keep).ToList()) recent.Remove(k);
        Services.Students.Tell(new LabelledBatch(l.Request.ReplyTo, l.Request.Seq, l.Request.Images, l.Labels, l.Request.Temperature, l.Request.Labels));
    }

    protected override void PostStop()
    {
        var t = teacher;
        EngineAccess.Release(() => t?.Dispose());
        base.PostStop();
    }
}

/// <summary>
/// A run's engine lines on the node's console, in the node's log format (`--log-format json`: one
/// object per line, as Akka's own lines), with the run's id as their source (several runs may log
/// from one node); a line that says "warning:" is a warning.
/// </summary>
internal sealed class RunLogWriter(string format, string runId) : TextWriter
{
    private readonly System.Text.StringBuilder partial = new();

    public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;

    public override void WriteLine(string? value)
    {
        var line = partial.Append(value).ToString();
        partial.Clear();
        Console.Out.WriteLine(NodeLogger.Line(format, runId, line, line.Contains("warning: ", StringComparison.Ordinal) ? "warning" : "info"));
    }

    public override void Write(char value)
    {
        if (value == '\n') WriteLine((string?)null);
        else if (value != '\r') partial.Append(value);
    }
}
