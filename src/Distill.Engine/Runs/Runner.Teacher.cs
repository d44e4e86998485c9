using System.Security.Cryptography;
using System.Text;
using Distill.Engine.Interop;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using YamlDotNet.Serialization;
using static TorchSharp.torch;

namespace Distill.Engine.Runs;

/// <summary>The teacher a run uses: loaded from its checkpoint, from the cache of trained teachers, or trained (resumably, for the teacher entity).</summary>
public sealed partial class Runner
{
    /// <summary>
    /// The teacher a spec names (checkpoint, cache or training), for hosts that run the rest of the
    /// method elsewhere (the cluster's teacher entity). Events, checkpoints and teacher.pt go to
    /// workDir; metrics rows go to metricsSink when given (else to workDir's metrics.csv), and each
    /// event also to eventSink. EarlierSeconds: what its training took in earlier commands, where it
    /// went on from their checkpoint (0 otherwise); the caller adds its own time.
    /// </summary>
    public (Classifier Teacher, double Accuracy, bool FromCache, double EarlierSeconds) PrepareTeacher(RunSpec spec, DataSplits data, string workDir,
        Action<string, long, IReadOnlyDictionary<string, double>>? metricsSink = null, Action<string>? eventSink = null)
    {
        Native.TorchRuntime.Initialize();
        var device = Devices.Resolve(spec.Device);
        var teacherSpec = spec.Method.TeacherOf(spec) ?? throw new ArgumentException($"spec {spec.Name} has no teacher");
        using var dir = new RunDirectory(workDir) { MetricsSink = metricsSink, EventSink = eventSink };
        return ObtainTeacher(new PhaseContext(spec, data, device, dir), teacherSpec, resume: true);
    }

    /// <param name="resume">Go on from the newest sound checkpoint in the directory, and checkpoint every <see cref="RunnerOptions.TeacherCheckpointEvery"/> (the teacher entity's training).</param>
    private (Classifier Teacher, double Accuracy, bool FromCache, double EarlierSeconds) ObtainTeacher(PhaseContext ctx, ModelSpec t, bool resume = false)
    {
        if (t.Checkpoint is not null)
        {
            if (!File.Exists(t.Checkpoint)) throw new FileNotFoundException($"teacher.checkpoint: {t.Checkpoint} does not exist", t.Checkpoint);
            var loaded = NewModel(t.Arch, ctx.Data, ctx.Device);
            try
            {
                var report = StateDictLoader.LoadCheckpoint(loaded, t, ctx.Data.Channels, ctx.Data.ImageSize, ctx.Data.Classes)!;
                ctx.Dir.Event($"teacher loaded from {t.Checkpoint}: {report}");
            }
            catch (WeightFileException e) { loaded.Dispose(); throw new InvalidDataException($"teacher.checkpoint: {e.Message}", e); }
            // the engine loop's run directory holds the teacher it used, as for a trained or cached one (written
            // whole or not at all); the teacher entity's is the coordinator's copy of its blob
            if (!resume)
            {
                loaded.save(ctx.Dir.File("teacher.pt.tmp"));
                File.Move(ctx.Dir.File("teacher.pt.tmp"), ctx.Dir.File("teacher.pt"), overwrite: true);
            }
            var accuracy = ctx.TestAccuracy(loaded);
            if (NearChance(accuracy, ctx.Data.Classes) is { } warning)
            {
                ctx.Dir.Event(warning);
                log.WriteLine($"[teacher] {warning}");
            }
            return (loaded, accuracy, false, 0);
        }
        var cacheDir = TeacherCacheDir(options.TeacherCache, options.DataCache);
        var cached = Path.Combine(cacheDir, $"{t.Arch}-{ctx.Spec.Data.Name}-{TeacherKey(ctx.Spec, t)}.pt");
        if (File.Exists(cached))
        {
            var loaded = NewModel(t.Arch, ctx.Data, ctx.Device);
            try
            {
                ModuleState.Load(loaded, cached);
                // the run directory holds the teacher it used, wherever it came from
                File.Copy(cached, ctx.Dir.File("teacher.pt"), overwrite: true);
                return (loaded, ctx.TestAccuracy(loaded), true, 0);
            }
            catch (Exception e)
            {
                log.WriteLine($"[teacher] cached {cached} is unreadable ({e.Message}); training again");
            }
        }
        manual_seed(ctx.Spec.Seed + 1000);
        var teacher = NewModel(t.Arch, ctx.Data, ctx.Device);
        using var trainer = new RealDataTrainer("teacher", teacher, ctx.Data, t.Train, Augmentation.For(ctx.Spec.Data, t.Train), new StudentObjective.CrossEntropy(), ctx.Device, ctx.Spec.Seed + 1000);
        var outcome = RunPhase(ctx, trainer, t.Train.EvalEvery, NewGuard(ctx.Spec), sampleGrid: 0, resume ? options.TeacherCheckpointEvery : null);
        log.WriteLine($"[teacher] {Evaluation.Errors(outcome.Test, ctx.Data.TestX.shape[0])} test errors");
        Directory.CreateDirectory(cacheDir);
        teacher.save(cached + ".tmp");
        File.Move(cached + ".tmp", cached, overwrite: true);
        teacher.save(ctx.Dir.File("teacher.pt"));
        return (teacher, outcome.Test, false, outcome.Earlier);
    }

    /// <summary>
    /// A loaded teacher that does no better than twice chance almost always means weights made for
    /// other inputs (normalisation, image size, channel order) or a file that was never trained;
    /// it is used as given (a user may want it), with this said where it shows.
    /// </summary>
    public static string? NearChance(double accuracy, int classes) =>
        accuracy <= 200.0 / classes
            ? $"warning: the loaded teacher scores {accuracy:F2}% on the test set, near chance for {classes} classes ({100.0 / classes:F1}%): " +
              "were its weights trained on inputs normalised and sized as this spec's data (docs/pytorch.md)?"
            : null;

    /// <summary>Where trained teachers are cached: the given folder, else "teachers" beside the data cache.</summary>
    public static string TeacherCacheDir(string? teacherCache, string? dataCache) =>
        teacherCache ?? Environment.GetEnvironmentVariable("CLUSTERDISTILL_TEACHERS") ?? Path.Combine(Path.GetDirectoryName(dataCache ?? Data.DatasetCache.DefaultRoot())!, "teachers");

    /// <summary>Everything that determines a trained teacher; device is left out (CPU and CUDA teachers are interchangeable).</summary>
    private static string TeacherKey(RunSpec spec, ModelSpec t)
    {
        var text = string.Join("|", spec.Data.Name, spec.Data.ImageSize, spec.Data.TrainLimit, t.Arch,
            new SerializerBuilder().ConfigureDefaultValuesHandling(DefaultValuesHandling.OmitNull).Build().Serialize(t.Train), spec.Seed) + (Augmentation.For(spec.Data, t.Train) is { } a ? "|" + a.Key : "") + (spec.Data.Validation > 0 ? $"|val{spec.Data.Validation}" : "");
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..12].ToLowerInvariant();
    }
}
