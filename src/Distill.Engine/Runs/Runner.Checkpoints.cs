using System.Text;
using Distill.Engine.Methods;
using static TorchSharp.torch;

namespace Distill.Engine.Runs;

/// <summary>A resumable phase's checkpoints: saved with the process RNG beside them, and the newest sound one taken up again.</summary>
public sealed partial class Runner
{
    /// <summary>What a phase's loop has counted so far, kept with a resumable phase's checkpoints: its rollbacks, its best evaluation, and the guard's.</summary>
    /// <param name="Seconds">The phase's time to this checkpoint, earlier commands' included (a resumed teacher's teacher_seconds counts them).</param>
    private readonly record struct PhaseMarks(int Rollbacks, double Best, double GuardBest, double Seconds);

    /// <summary>
    /// A checkpoint; a resumable phase's also keeps the process-wide RNG beside it (`.rng`: dropout
    /// draws from it), so that a resumed phase draws what the uninterrupted one would have, and
    /// the loop's marks after it (the guard's rollback budget and the best it measures drops from).
    /// </summary>
    private static void SaveCheckpoint(PhaseContext ctx, IStepTrainer trainer, bool resumable, PhaseMarks marks)
    {
        var path = ctx.Dir.SaveCheckpoint(trainer);
        if (!resumable) return;
        using (var ms = new MemoryStream())
        {
            using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true))
            {
                StateIo.WriteGenerator(w, Generator.Default);
                w.Write(marks.Rollbacks);
                w.Write(marks.Best);
                w.Write(marks.GuardBest);
                w.Write(marks.Seconds);
            }
            File.WriteAllBytes(path + ".rng.tmp", ms.ToArray());
        }
        File.Move(path + ".rng.tmp", path + ".rng", overwrite: true);
        // the checkpoints the directory no longer keeps
        foreach (var rng in Directory.GetFiles(System.IO.Path.GetDirectoryName(path)!, "*.ckpt.rng").Where(r => !File.Exists(r[..^4])))
            File.Delete(rng);
    }

    /// <summary>
    /// Loads the newest checkpoint of the phase whose SHA-256 matches (a torn or corrupt one is
    /// passed over, with an event); returns its path and the loop's marks at it (none beside an
    /// older checkpoint), or null when there is none.
    /// </summary>
    private static (string Path, PhaseMarks? Marks)? Resume(PhaseContext ctx, IStepTrainer trainer)
    {
        var dir = System.IO.Path.Combine(ctx.Dir.Path, "checkpoints");
        if (!Directory.Exists(dir)) return null;
        foreach (var path in Directory.GetFiles(dir, $"{trainer.Phase}-step*.ckpt").OrderDescending(StringComparer.Ordinal))
        {
            // a checkpoint without its hash cannot be told whole
            if (!File.Exists(path + ".sha256"))
            {
                ctx.Dir.Event($"checkpoint {path} not used to resume: no {path}.sha256 beside it");
                continue;
            }
            // LoadCheckpoint compares the hash before any of it is loaded: a corrupt one (no inner cause;
            // a truncated one fails mid-load, and is not passed over) leaves the trainer as it was
            try { RunDirectory.LoadCheckpoint(trainer, path); }
            catch (InvalidDataException e) when (e.InnerException is null)
            {
                ctx.Dir.Event($"checkpoint {path} not used to resume: {e.Message}");
                continue;
            }
            PhaseMarks? marks = null;
            if (File.Exists(path + ".rng"))
            {
                using var r = new BinaryReader(File.OpenRead(path + ".rng"));
                StateIo.ReadGenerator(r, Generator.Default);
                // the time came later: a checkpoint written before it counts its phase's earlier time as 0
                if (r.BaseStream.Position < r.BaseStream.Length)
                    marks = new PhaseMarks(r.ReadInt32(), r.ReadDouble(), r.ReadDouble(), r.BaseStream.Position < r.BaseStream.Length ? r.ReadDouble() : 0);
            }
            else ctx.Dir.Event($"no process RNG state beside {path}: dropout after the resume draws other masks than the uninterrupted run's");
            ctx.Dir.Event($"resumed at step {trainer.Step} from {path}" +
                          (marks is { } m ? $" ({m.Rollbacks} rollback(s) so far, best evaluation {(double.IsFinite(m.Best) ? $"{m.Best:F2}%" : "none yet")})" : ""));
            return (path, marks);
        }
        return null;
    }
}
