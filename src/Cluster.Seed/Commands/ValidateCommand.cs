using System.CommandLine;
using Distill.Engine.Specs;

namespace Cluster.Seed.Commands;

/// <summary>`validate`: check specs without running them.</summary>
internal static class ValidateCommand
{
    public static Command Create(TextWriter stdout)
    {
        var specs = CommandLine.SpecArgument<string[]>("specs", "run specs (YAML)");
        specs.Arity = ArgumentArity.OneOrMore;
        var command = new Command("validate", "check specs without running them, and the files and folders they name (from this machine)") { specs };
        command.SetAction(p =>
        {
            foreach (var f in p.GetValue(specs)!)
            {
                var s = SpecParser.Load(f);
                var missing = Missing(s).ToList();
                if (missing.Count > 0)
                    throw new SpecException(f, "", "not found on this machine: " + string.Join(", ", missing.Select(m => $"'{m.Key}' {m.Path}")) +
                                                   $" (a relative path is read from the current directory, {Environment.CurrentDirectory})");
                stdout.WriteLine($"{f}: ok ({s.Method.Name}, {s.Data.Name}, student {s.Student.Arch})");
            }
            return 0;
        });
        return command;
    }

    /// <summary>The paths a spec names that are not there: the files and folders the run will read.</summary>
    private static IEnumerable<(string Key, string Path)> Missing(RunSpec s)
    {
        if (s.Teacher?.Checkpoint is { } t && !File.Exists(t)) yield return ("teacher.checkpoint", t);
        if (s.Student.Checkpoint is { } st && !File.Exists(st)) yield return ("student.checkpoint", st);
        if (s.Data.Path is { } d && !Directory.Exists(d)) yield return ("data.path", d);
    }
}
