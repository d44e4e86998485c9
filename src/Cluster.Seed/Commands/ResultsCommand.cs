using System.CommandLine;
using Cluster.Node.Http;
using Distill.Engine.Specs;
using Distill.Engine.Sweeps;

namespace Cluster.Seed.Commands;

/// <summary>
/// `results`: a sweep's, or some runs', results with the hyperparameters as columns, best first;
/// also as CSV and JSON. From local directories, or from the seed's API with --server.
/// </summary>
internal static class ResultsCommand
{
    public static Command Create(TextWriter stdout)
    {
        var what = CommandLine.SpecArgument<string[]>("sweep-or-runs", "a sweep id (in --sweeps-dir, or on the cluster) or sweep directory, or run directories (run ids on the cluster)");
        what.Arity = ArgumentArity.OneOrMore;
        var sweepsDir = new Option<string>("--sweeps-dir") { Description = "folder of sweep directories", DefaultValueFactory = _ => "sweeps" };
        var output = new Option<string?>("--out") { Description = "where results.csv and results.json go (default: the sweep's directory, or the current one for runs)" };
        var metric = new Option<string>("--metric") { Description = "the number of result.json to tabulate for run directories (a sweep's table is of the metric it scores on) (student_accuracy, teacher_accuracy, baseline_accuracy, student_test_errors, teacher_test_errors, baseline_test_errors, validation_accuracy, wall_seconds, ...)", DefaultValueFactory = _ => "student_accuracy" };
        var command = new Command("results", "results with the hyperparameters as columns (mean ± std over repeats) and the best configuration; writes results.csv and results.json")
            { what, sweepsDir, output, metric };
        var api = new ApiOptions();
        api.AddTo(command);
        command.SetAction(async (p, ct) =>
        {
            var args = p.GetValue(what)!;
            // a sweep's table is of the metric it scores on: --metric, where typed, must be that one
            var typedMetric = p.GetResult(metric) is { Implicit: false } ? p.GetValue(metric) : null;
            if (api.Given(p))
            {
                using var client = api.Client(p);
                ResultsView view;
                try { view = await client.ResultsAsync(args.Length == 1 ? args[0] : null, args, typedMetric, ct); }
                catch (ApiProblemException e) when (e.Status == System.Net.HttpStatusCode.NotFound && args.Length == 1)
                {
                    view = await client.ResultsAsync(null, args, typedMetric, ct);   // not a sweep: a run
                }
                return Write(stdout, view.Table, view.Csv, view.Json, p.GetValue(output) ?? ".");
            }
            var root = p.GetValue(sweepsDir)!;
            string? sweepDir = args.Length != 1 ? null
                : File.Exists(Path.Combine(args[0], "trials.csv")) ? args[0]
                : File.Exists(Path.Combine(root, args[0], "trials.csv")) ? Path.Combine(root, args[0]) : null;
            if (args.Length == 1 && sweepDir is null && !File.Exists(Path.Combine(args[0], "result.json")))
                throw new InputException($"'{args[0]}' is neither a sweep (no trials.csv in {string.Join(" or ", new[] { args[0], Path.Combine(root, args[0]) }.Distinct())}) nor a finished run directory");
            var table = sweepDir is not null ? ResultsTable.FromSweep(sweepDir, typedMetric) : ResultsTable.FromRuns(args, p.GetValue(metric)!);
            return Write(stdout, table.Format(), table.ToCsv(), table.ToJson(), p.GetValue(output) ?? sweepDir ?? ".");
        });
        return command;
    }

    private static int Write(TextWriter stdout, string table, string csv, string json, string dir)
    {
        stdout.Write(table);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "results.csv"), csv);
        File.WriteAllText(Path.Combine(dir, "results.json"), json);
        stdout.WriteLine($"[results] {Path.Combine(dir, "results.csv")}, {Path.Combine(dir, "results.json")}");
        return 0;
    }
}
