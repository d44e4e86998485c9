using System.Diagnostics;
using System.Text;
using Distill.Engine.Imaging;
using Distill.Engine.Interop;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Distill.Engine.Runs;

public sealed record RunnerOptions
{
    public string RunsRoot { get; init; } = "runs";
    public string? RunId { get; init; }
    public string? DataCache { get; init; }
    /// <summary>Trained teachers, keyed by a hash of everything that determines them (data, arch, training, seed).</summary>
    public string? TeacherCache { get; init; }
    /// <summary>Steps between metric reads (a read waits for the device; the student entity reads on the same steps).</summary>
    public const int DefaultLogEvery = 25;
    public int LogEvery { get; init; } = DefaultLogEvery;
    /// <summary>A progress line (step, rate, ETA, the latest losses) at least this often.</summary>
    public TimeSpan ProgressEvery { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Stops the run between two steps (Ctrl+C): Run throws OperationCanceledException.</summary>
    public CancellationToken Cancellation { get; init; }
    /// <summary>
    /// How often a teacher trained by <see cref="Runner.PrepareTeacher"/> checkpoints besides its
    /// evaluations, so that a restarted node goes on from there (its spec may evaluate only at the end).
    /// </summary>
    public TimeSpan TeacherCheckpointEvery { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>
/// Runs a spec in this process: loads data, obtains the teacher (checkpoint, cache or training),
/// runs the method's phases step by step with evaluation, sample grids, checkpoints and the
/// divergence guard, and writes the run directory.
/// </summary>
public sealed partial class Runner(RunnerOptions options, TextWriter log)
{
    public RunResult Run(RunSpec spec)
    {
        var wall = Stopwatch.StartNew();
        Native.TorchRuntime.Initialize();
        if (spec.Threads > 0) set_num_threads(spec.Threads);
        var device = Devices.Resolve(spec.Device);
        var runId = options.RunId ?? RunIds.New(spec.Name);
        // a run's folder is a child of the runs directory, whatever the id says (checked before anything is written)
        var root = Path.GetFullPath(options.RunsRoot);
        if (!string.Equals(Path.GetDirectoryName(Path.GetFullPath(Path.Combine(root, runId))), Path.TrimEndingDirectorySeparator(root), StringComparison.Ordinal))
            throw new ArgumentException($"run id '{runId}' names a folder outside the runs directory {root}");
        using var dir = new RunDirectory(Path.Combine(options.RunsRoot, runId));
        // a run that fails says so in its events.log, as the actors' runs do (the error itself goes to the caller)
        try { return RunIn(spec, runId, device, dir, wall); }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            dir.Event($"failed: {e.Message}");
            throw;
        }
    }

    private RunResult RunIn(RunSpec spec, string runId, Device device, RunDirectory dir, Stopwatch wall)
    {
        dir.WriteSpec(spec);
        dir.Event($"run {runId}: method {spec.Method.Name}, device {device.type}, seed {spec.Seed}, threads {get_num_threads()}");
        log.WriteLine($"[run] {runId}: {spec.Method.Name} on {spec.Data.Name}, device {device.type}, {get_num_threads()} threads -> {dir.Path}");

        using var data = DataSplits.Load(spec.Data, options.DataCache, log);
        log.WriteLine($"[data] {data.Name}: {data.TrainX.shape[0]:N0} train / {(data.HasValidation ? $"{data.ValidationX!.shape[0]:N0} validation (evaluated during training) / " : "")}{data.TestX.shape[0]:N0} test, {data.Channels}x{data.ImageSize}x{data.ImageSize}, {data.Classes} classes");

        var ctx = new PhaseContext(spec, data, device, dir);
        double? teacherAcc = null, baselineAcc = null;
        var teacherSeconds = 0.0;
        var fromCache = false;
        Classifier? teacher = null;
        var teacherSpec = spec.Method.TeacherOf(spec);
        if (teacherSpec is not null)
        {
            var sw = Stopwatch.StartNew();
            (teacher, teacherAcc, fromCache, _) = ObtainTeacher(ctx, teacherSpec);
            teacherSeconds = sw.Elapsed.TotalSeconds;
            log.WriteLine($"[teacher] {teacherSpec.Arch}: {teacherAcc:F2}% test accuracy{(fromCache ? " (from cache)" : "")} in {teacherSeconds:F1} s");
            dir.Event($"teacher {teacherSpec.Arch} accuracy {teacherAcc:F2}% cached={fromCache}");
        }

        if (spec.CompareBaseline)
        {
            // the spec the actors run as the baseline's own run, trained here under the phase name "baseline"
            var b = spec.Baseline();
            manual_seed(b.Seed);
            using var alone = NewModel(b.Student.Arch, data, device);
            var train = b.Student.Train;
            using var t = new RealDataTrainer("baseline", alone, data, train, Augmentation.For(b.Data, train), b.Method.Objective(b), device, b.Seed);
            baselineAcc = RunPhase(ctx, t, train.EvalEvery, NewGuard(b), b.Method.SampleGrid(b)).Test;
            log.WriteLine($"[baseline] {spec.Student.Arch} trained alone: {baselineAcc:F2}%");
        }

        manual_seed(spec.Seed);
        using var student = NewModel(spec.Student.Arch, data, device);
        try
        {
            if (StateDictLoader.LoadCheckpoint(student, spec.Student, data.Channels, data.ImageSize, data.Classes) is { } loaded)
                dir.Event($"student starts from {spec.Student.Checkpoint}: {loaded}");
        }
        catch (WeightFileException e) { throw new InvalidDataException($"student.checkpoint: {e.Message}", e); }
        using var trainer = spec.Method.CreateTrainer(new MethodContext(spec, data, device, student, teacher));
        var outcome = RunPhase(ctx, trainer, spec.Method.EvalEvery(spec), NewGuard(spec), spec.Method.SampleGrid(spec));
        student.save(dir.File("student.pt"));
        StudentExport.Write(dir.File("student.pt"), dir.Path);
        teacher?.Dispose();

        var result = new RunResult
        {
            RunId = runId,
            Name = spec.Name,
            Method = spec.Method.Name,
            Dataset = spec.Data.Name,
            TeacherArch = teacherSpec?.Arch,
            StudentArch = spec.Student.Arch,
            TeacherAccuracy = teacherAcc,
            StudentAccuracy = outcome.Test,
            BestStudentAccuracy = outcome.Best,
            ValidationAccuracy = data.HasValidation ? outcome.Final : null,
            TestImages = data.TestX.shape[0],
            StudentTestErrors = Evaluation.Errors(outcome.Test, data.TestX.shape[0]),
            TeacherTestErrors = teacherAcc is { } ta ? Evaluation.Errors(ta, data.TestX.shape[0]) : null,
            BaselineTestErrors = baselineAcc is { } ba ? Evaluation.Errors(ba, data.TestX.shape[0]) : null,
            BaselineAccuracy = baselineAcc,
            Steps = trainer.Step,
            WallSeconds = Math.Round(wall.Elapsed.TotalSeconds, 1),
            TeacherSeconds = Math.Round(teacherSeconds, 1),
            TeacherFromCache = fromCache,
            Device = device.type == DeviceType.CUDA ? $"cuda:{cuda.device_count()}" : "cpu",
            Seed = spec.Seed,
            Rollbacks = outcome.Rollbacks,
            StudentUsedRealData = spec.Method.StudentSeesData,
            SynthesisedImages = spec.Method.SynthesisedImages(spec, trainer.Step),
        };
        dir.WriteResult(result);
        dir.Event($"done: student {outcome.Test:F2}% after {trainer.Step} steps in {result.WallSeconds} s");
        log.WriteLine($"[result] student {outcome.Test:F2}% test ({result.StudentTestErrors} errors; best {(data.HasValidation ? "validation" : "test")} evaluation {outcome.Best:F2}%), {(teacherAcc is { } shown ? $"teacher {shown:F2}%, " : "")}{result.WallSeconds} s -> {dir.File("result.json")}");
        return result;
    }

    private sealed record PhaseContext(RunSpec Spec, DataSplits Data, Device Device, RunDirectory Dir)
    {
        /// <summary>Top-1 accuracy on the whole test set.</summary>
        public double TestAccuracy(Classifier model) => Evaluation.Accuracy(model, Data.TestX, Data.TestY, Device, Spec.Data.EvalBatch);
        /// <summary>Top-1 accuracy on what evaluations during training measure (<see cref="DataSplits.EvalX"/>).</summary>
        public double EvalAccuracy(Classifier model) => Evaluation.Accuracy(model, Data.EvalX, Data.EvalY, Device, Spec.Data.EvalBatch);
    }

    private static DivergenceGuard? NewGuard(RunSpec spec) => spec.Guard.Enabled ? new DivergenceGuard(spec.Guard) : null;

    /// <summary>Final and Best: the evaluations during training (validation split or test set); Test: the test set at the end.</summary>
    /// <param name="Earlier">Seconds the phase trained in earlier commands, before the checkpoint it resumed from.</param>
    private readonly record struct PhaseOutcome(double Final, double Best, int Rollbacks, double Test, double Earlier = 0);

    private static Classifier NewModel(string arch, DataSplits data, Device device)
    {
        var m = ModelFactory.Create(arch, data.Channels, data.ImageSize, data.Classes);
        m.to(device);
        return m;
    }

    /// <param name="checkpointEvery">Resumable: the phase goes on from the newest sound checkpoint of the directory, and checkpoints this often besides its evaluations.</param>
    private PhaseOutcome RunPhase(PhaseContext ctx, IStepTrainer trainer, int evalEvery, DivergenceGuard? guard, int sampleGrid, TimeSpan? checkpointEvery = null)
    {
        var resumable = checkpointEvery is not null;
        var sw = Stopwatch.StartNew();
        var lastCheckpoint = TimeSpan.Zero;
        var columns = new SortedSet<string>();
        double final = double.NaN, best = double.NegativeInfinity, test = double.NaN;
        var rollbacks = 0;
        var earlier = 0.0;
        if (resumable && Resume(ctx, trainer) is { } from)
        {
            log.WriteLine($"[{trainer.Phase}] resumed at step {trainer.Step} from {from.Path}");
            // the guard goes on counting rollbacks and measuring drops from the best before the stop
            if (from.Marks is { } marks)
            {
                (rollbacks, best, earlier) = (marks.Rollbacks, marks.Best, marks.Seconds);
                guard?.Remember(marks.GuardBest);
            }
            // its last checkpoint was its last step: what the loop would have measured at the end
            if (trainer.Done) (final, test) = (ctx.EvalAccuracy(trainer.Model), ctx.Data.HasValidation ? ctx.TestAccuracy(trainer.Model) : ctx.EvalAccuracy(trainer.Model));
        }
        byte[]? goodState = Snapshot(trainer), bestState = null;
        var checkEvery = guard?.CheckEvery ?? long.MaxValue;
        log.WriteLine($"[{trainer.Phase}] {trainer.TotalSteps} steps");
        var meter = new ProgressMeter(trainer.TotalSteps);
        var lastLine = TimeSpan.Zero;
        IReadOnlyDictionary<string, double>? latest = null;
        while (!trainer.Done)
        {
            options.Cancellation.ThrowIfCancellationRequested();
            // collections wait for the gaps between steps, whoever allocates (Native/QuietCollections)
            using var hold = Native.QuietCollections.Hold();
            var step = trainer.Step + 1;
            var isEval = MethodDefinition.EvaluationDue(step, evalEvery, trainer.TotalSteps);
            var isCheck = step % checkEvery == 0;
            var metrics = trainer.TrainStep(DivergenceGuard.ReadsMetrics(guard, step, options.LogEvery, isEval));
            var values = metrics is null ? null : new Dictionary<string, double>(metrics);
            if (values is not null && guard is not null)
            {
                var verdict = guard.CheckStep(values);
                if (!verdict.Healthy)
                {
                    Rollback(ctx, trainer, goodState!, verdict.Reason!, ref rollbacks, resumable);
                    continue;
                }
                if (isCheck) goodState = Snapshot(trainer);
            }
            // with the guard off nothing rolls back, but a loss that is not finite still ends the run, as the actors end it
            if (values is not null && guard is null && DivergenceGuard.NotFinite(values) is { } bad)
            {
                var reason = $"{bad} at step {step}; the guard is off (guard.enabled: false), so nothing rolls back";
                ctx.Dir.Event($"stopped: {reason}");
                throw new InvalidOperationException($"[{trainer.Phase}] {reason}; {Saved(ctx)}");
            }
            if (isEval)
            {
                var acc = ctx.EvalAccuracy(trainer.Model);
                values ??= [];
                values[ctx.Data.EvalMetric] = acc;
                if (guard is not null)
                {
                    var verdict = guard.CheckEvaluation(acc);
                    if (!verdict.Healthy)
                    {
                        Rollback(ctx, trainer, bestState ?? goodState!, verdict.Reason!, ref rollbacks, resumable);
                        continue;
                    }
                }
                final = acc;
                test = ctx.Data.HasValidation ? double.NaN : acc;
                if (ctx.Data.HasValidation && trainer.Step == trainer.TotalSteps)
                    values[DataSplits.TestAccuracy] = test = ctx.TestAccuracy(trainer.Model);
                if (acc > best)
                {
                    best = acc;
                    if (guard is not null) bestState = Snapshot(trainer);
                }
                if (sampleGrid > 0 && trainer.Samples(sampleGrid) is { } samples)
                {
                    using (samples) ctx.Dir.Samples(trainer.Phase, trainer.Step, SampleGrid.ToPng(samples, ctx.Data.Mean, ctx.Data.Std));
                }
                SaveCheckpoint(ctx, trainer, resumable, new PhaseMarks(rollbacks, best, guard?.BestAccuracy ?? double.NegativeInfinity, earlier + sw.Elapsed.TotalSeconds));
                lastCheckpoint = sw.Elapsed;
                log.WriteLine($"[{trainer.Phase}] step {trainer.Step}/{trainer.TotalSteps} {(ctx.Data.HasValidation ? "validation" : "test")} accuracy {acc:F2}%{(ctx.Data.HasValidation && !double.IsNaN(test) ? $", test {test:F2}%" : "")} ({sw.Elapsed.TotalSeconds:F0} s)");
            }
            meter.Add(sw.Elapsed.TotalSeconds, trainer.Step);
            if (values is not null) latest = values;
            if (sw.Elapsed - lastLine >= options.ProgressEvery && !trainer.Done)
            {
                lastLine = sw.Elapsed;
                log.WriteLine($"[{trainer.Phase}] {meter.Describe(trainer.Step)} {ProgressMeter.Losses(latest)}".TrimEnd());
            }
            if (values is not null)
            {
                values["rss_mb"] = RunDirectory.ResidentMegabytes();
                foreach (var k in values.Keys) columns.Add(k);
                ctx.Dir.Metrics(trainer.Phase, trainer.Step, sw.Elapsed.TotalSeconds, values, RunDirectory.KnownColumns.Concat(columns).Distinct());
                if (trainer.Step % (options.LogEvery * 10) == 0 && !isEval)
                    log.WriteLine($"[{trainer.Phase}] step {trainer.Step}/{trainer.TotalSteps} " +
                                  string.Join(" ", values.Where(kv => kv.Key.StartsWith("loss")).Select(kv => $"{kv.Key}={kv.Value:G4}")));
            }
            // with a guard, only a step it has just found healthy: a resume must not start from a diverged state
            if (checkpointEvery is { } every && !isEval && !trainer.Done && (guard is null || isCheck) && sw.Elapsed - lastCheckpoint >= every)
            {
                SaveCheckpoint(ctx, trainer, resumable, new PhaseMarks(rollbacks, best, guard?.BestAccuracy ?? double.NegativeInfinity, earlier + sw.Elapsed.TotalSeconds));
                lastCheckpoint = sw.Elapsed;
            }
        }
        return new PhaseOutcome(final, best, rollbacks, test, earlier);
    }

    /// <summary>Where a failed run's checkpoints are, or that it wrote none (before its first checkpoint step).</summary>
    private static string Saved(PhaseContext ctx) =>
        Directory.Exists(ctx.Dir.File("checkpoints")) && Directory.EnumerateFiles(ctx.Dir.File("checkpoints"), "*.ckpt").Any()
            ? $"checkpoints so far are in {ctx.Dir.File("checkpoints")}"
            : $"it failed before its first checkpoint, so none was written (its log and metrics are in {ctx.Dir.Path})";

    /// <param name="resumable">Also drop the phase's checkpoints past the step it goes back to: a resume must not pick the path the guard rejected.</param>
    private void Rollback(PhaseContext ctx, IStepTrainer trainer, byte[] state, string reason, ref int rollbacks, bool resumable = false)
    {
        rollbacks++;
        var at = trainer.Step;
        if (!DivergenceGuard.MayRollBack(ctx.Spec.Guard, rollbacks - 1))
        {
            ctx.Dir.Event($"guard: giving up after {rollbacks - 1} rollbacks; last problem at step {at}: {reason}");
            throw new InvalidOperationException($"[{trainer.Phase}] diverged at step {at} ({reason}) after {rollbacks - 1} rollbacks; {Saved(ctx)}");
        }
        // each rollback lowers the rates in force, not the saved state's: rollbacks to one state compound
        var scale = trainer.LrScale * ctx.Spec.Guard.LrFactor;
        using (var r = new BinaryReader(new MemoryStream(state))) trainer.LoadState(r);
        trainer.ScaleLearningRates(scale / trainer.LrScale);
        if (resumable && Directory.Exists(System.IO.Path.Combine(ctx.Dir.Path, "checkpoints")))
            foreach (var rejected in Directory.GetFiles(System.IO.Path.Combine(ctx.Dir.Path, "checkpoints"), $"{trainer.Phase}-step*.ckpt")
                         .Where(f => long.TryParse(System.IO.Path.GetFileNameWithoutExtension(f)[(trainer.Phase.Length + 5)..], out var s) && s > trainer.Step))
                foreach (var f in new[] { rejected, rejected + ".sha256", rejected + ".rng" }) File.Delete(f);
        var message = $"guard: {reason} at step {at}; rolled back to step {trainer.Step} and multiplied learning rates by {ctx.Spec.Guard.LrFactor} ({DivergenceGuard.Scale(trainer.LrScale)}; rollback {rollbacks})";
        ctx.Dir.Event(message);
        log.WriteLine($"[{trainer.Phase}] {message}");
    }

    private static byte[] Snapshot(IStepTrainer trainer)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true)) trainer.SaveState(w);
        return ms.ToArray();
    }
}
