using System.CommandLine;
using Distill.Engine.Specs;
using Distill.Engine.Sweeps;

namespace Cluster.Seed.Commands;

/// <summary>`validate`: check run and sweep specs without running them; every file is checked, and each refusal said.</summary>
internal static class ValidateCommand
{
    public static Command Create(TextWriter stdout)
    {
        var specs = CommandLine.SpecArgument<string[]>("specs", "run or sweep specs (YAML)");
        specs.Arity = ArgumentArity.OneOrMore;
        var command = new Command("validate", "check run and sweep specs without running them, and the files and folders a run spec names " +
                                              "(from this machine); every file is checked, and the exit code is 2 if any was refused") { specs };
        command.SetAction(p =>
        {
            var stderr = p.InvocationConfiguration.Error;
            var refused = 0;
            foreach (var f in p.GetValue(specs)!)
            {
                try { stdout.WriteLine(Check(f)); }
                catch (SpecException e)
                {
                    refused++;
                    stderr.WriteLine($"spec refused: {e.Message}");
                }
            }
            return refused > 0 ? 2 : 0;
        });
        return command;
    }

    /// <summary>What the spec in `file` is, or a <see cref="SpecException"/> saying why it is refused.</summary>
    private static string Check(string file)
    {
        string text;
        try { text = File.ReadAllText(file); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SpecException(file, "", Directory.Exists(file) ? "a folder, not a spec file" : e is FileNotFoundException or DirectoryNotFoundException ? "file not found" : $"cannot be read ({e.Message})");
        }
        if (SweepParser.IsSweep(text))
        {
            var sweep = SweepParser.Load(file);
            RequireFiles(file, sweep);
            return $"{file}: ok (sweep of {sweep.Base.Method.Name} over {(sweep.Space.Count == 0 ? "no hyperparameter (its repeats only)" : string.Join(", ", sweep.Space.Select(d => d.Path)))}; " +
                   $"{sweep.Search.Kind} search, {sweep.Scheduler.Kind} scheduler)";
        }
        var s = SpecParser.Load(file);
        RequireFiles(file, s);
        return $"{file}: ok ({s.Method.Name}, {s.Data.Name}, student {s.Student.Arch})";
    }

    /// <summary>Refuses a spec that names files or folders this machine does not have (before a run of it is made: `run` checks too).</summary>
    internal static void RequireFiles(string file, RunSpec s)
    {
        var missing = Missing(s).ToList();
        if (missing.Count > 0)
            throw new SpecException(file, "", "not found on this machine: " + string.Join(", ", missing.Select(m => $"'{m.Key}' {m.Path}{m.Why}")) +
                                              (missing.Any(m => !Path.IsPathRooted(m.Path)) ? $" (a relative path is read from the current directory, {Environment.CurrentDirectory})" : "") +
                                              "; the rest of the spec is valid");
        RequireWeights(file, s);
    }

    /// <summary>The files a sweep's trials read: the base spec's, and each file a grid or choice over a checkpoint or data.path names.</summary>
    internal static void RequireFiles(string file, SweepSpec sweep)
    {
        RequireFiles(file, sweep.Base);
        foreach (var d in sweep.Space)
        {
            if (d.Path is not ("teacher.checkpoint" or "student.checkpoint" or "data.path")) continue;
            var options = d switch { GridDimension g => g.Options, ChoiceDimension c => c.Options, _ => [] };
            foreach (var option in options)
                RequireFiles(file, SpecParser.Parse(SpecYaml.With(sweep.BaseYaml, [new(d.Path, option)]), file));
        }
    }

    /// <summary>
    /// Reads each weights file the spec names into its architecture, as the run will: a file that
    /// does not fit (not weights, a foreign pickle, missing or unexpected keys, wrong shapes) is
    /// refused now, not once the run's teacher entity starts.
    /// </summary>
    private static void RequireWeights(string file, RunSpec s)
    {
        var (mean, _, classes) = Distill.Engine.Training.DataSplits.Constants(s.Data.Name);
        foreach (var (key, model) in new[] { ("teacher.checkpoint", s.Teacher), ("student.checkpoint", s.Student) })
        {
            if (model?.Checkpoint is null) continue;
            Distill.Engine.Native.TorchRuntime.Initialize();
            using var _ = TorchSharp.torch.NewDisposeScope();
            using var m = Distill.Engine.Models.ModelFactory.Create(model.Arch, mean.Length, s.Data.ImageSize, classes);
            try { Distill.Engine.Interop.StateDictLoader.LoadCheckpoint(m, model, mean.Length, s.Data.ImageSize, classes); }
            catch (Distill.Engine.Interop.WeightFileException e) { throw new SpecException(file, key, e.Message); }
        }
    }

    /// <summary>The paths a spec names that are not there: the files and folders the run will read.</summary>
    /// <summary>The paths that are not there, each with a word on what is there instead (a folder for a file, a file for a folder).</summary>
    private static IEnumerable<(string Key, string Path, string Why)> Missing(RunSpec s) =>
        Paths(s).Where(x => x.Folder ? !Directory.Exists(x.Path) : !File.Exists(x.Path))
            .Select(x => (x.Key, x.Path, x.Folder ? File.Exists(x.Path) ? " (a file: it names a folder)" : ""
                                                   : Directory.Exists(x.Path) ? " (a folder: it names a file)" : ""));

    /// <summary>The files and folders a spec names (each read by the process that uses it, a relative one from that process's working directory).</summary>
    internal static IEnumerable<(string Key, string Path, bool Folder)> Paths(RunSpec s)
    {
        if (s.Teacher?.Checkpoint is { } t) yield return ("teacher.checkpoint", t, false);
        if (s.Student.Checkpoint is { } st) yield return ("student.checkpoint", st, false);
        if (s.Data.Path is { } d) yield return ("data.path", d, true);
    }
}
