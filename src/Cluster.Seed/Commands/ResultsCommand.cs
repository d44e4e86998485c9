using System.CommandLine;
using Distill.Engine.Sweeps;

namespace Cluster.Seed.Commands;

/// <summary>`results`: a sweep's, or some runs', results with the hyperparameters as columns, best first; also as CSV and JSON.</summary>
internal static class ResultsCommand
{
    public static Command Create(TextWriter stdout)
    {
        var what = CommandLine.SpecArgument<string[]>("sweep-or-runs", "a sweep id (in --sweeps-dir) or sweep directory, or run directories");
        what.Arity = ArgumentArity.OneOrMore;
        var sweepsDir = new Option<string>("--sweeps-dir") { Description = "folder of sweep directories", DefaultValueFactory = _ => "sweeps" };
        var output = new Option<string?>("--out") { Description = "where results.csv and results.json go (default: the sweep's directory, or the current one for runs)" };
        var command = new Command("results", "results with the hyperparameters as columns (mean ± std over repeats) and the best configuration; writes results.csv and results.json")
            { what, sweepsDir, output };
        command.SetAction(p =>
        {
            var args = p.GetValue(what)!;
            var root = p.GetValue(sweepsDir)!;
            string? sweepDir = args.Length != 1 ? null
                : File.Exists(Path.Combine(args[0], "trials.csv")) ? args[0]
                : File.Exists(Path.Combine(root, args[0], "trials.csv")) ? Path.Combine(root, args[0]) : null;
            if (args.Length == 1 && sweepDir is null && !File.Exists(Path.Combine(args[0], "result.json")))
                throw new FileNotFoundException($"'{args[0]}' is neither a sweep (no trials.csv in {args[0]} or {Path.Combine(root, args[0])}) nor a finished run directory");
            var table = sweepDir is not null ? ResultsTable.FromSweep(sweepDir) : ResultsTable.FromRuns(args);
            stdout.Write(table.Format());
            var dir = p.GetValue(output) ?? sweepDir ?? ".";
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "results.csv"), table.ToCsv());
            File.WriteAllText(Path.Combine(dir, "results.json"), table.ToJson());
            stdout.WriteLine($"[results] {Path.Combine(dir, "results.csv")}, {Path.Combine(dir, "results.json")}");
            return 0;
        });
        return command;
    }
}
