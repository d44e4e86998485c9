using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Distill.Engine.Specs;
using YamlDotNet.RepresentationModel;

namespace Distill.Engine.Sweeps;

/// <summary>One configuration's result: the mean and sample standard deviation of its runs' metric (none for one run).</summary>
public sealed record ResultRow(IReadOnlyList<string> Values, double Mean, double? Std, int Count, IReadOnlyList<string> Sources);

/// <summary>
/// What `results` prints and writes: a row per configuration with the hyperparameters as columns,
/// mean ± std over its repeats (seeds), best first. Read from a sweep's trials.csv, or from run
/// directories, whose hyperparameters are the resolved-spec keys that differ between them.
/// </summary>
public sealed record ResultsTable(IReadOnlyList<string> Columns, string Metric, string Mode, IReadOnlyList<ResultRow> Rows)
{
    public ResultRow? Best => Rows.Count > 0 ? Rows[0] : null;

    /// <summary>What the table leaves out, said under it: runs without the metric, trials that have not ended.</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    private static ResultsTable Sorted(IReadOnlyList<string> columns, string metric, string mode, IEnumerable<ResultRow> rows) =>
        new(columns, metric, mode, (mode == "max" ? rows.OrderByDescending(r => r.Mean) : rows.OrderBy(r => r.Mean)).ToArray());

    private static ResultRow Row(IReadOnlyList<string> values, IReadOnlyList<(double Value, string Source)> runs)
    {
        var v = runs.Select(r => r.Value).ToArray();
        return new ResultRow(values, v.Average(), SampleStd(v), v.Length, runs.Select(r => r.Source).ToArray());
    }

    /// <summary>The sample standard deviation (n - 1); none for fewer than two values, where it is undefined.</summary>
    public static double? SampleStd(IReadOnlyList<double> v)
    {
        if (v.Count < 2) return null;
        var mean = v.Average();
        return Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Count - 1));
    }

    /// <summary>A hyperparameter's value (the YAML scalar put into a spec) as JSON types it: a number or a boolean where the spec reads one.</summary>
    public static JsonNode? JsonScalar(string value) =>
        long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n
        : double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var x) && double.IsFinite(x) ? x
        : value is "true" or "false" ? value == "true"
        : JsonValue.Create(value);

    /// <summary>A hyperparameter's value as a table shows it: a long fraction (a sampled learning rate) to 4 significant digits.</summary>
    public static string Display(string value) =>
        value.Length > 8 && double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var x) && double.IsFinite(x) && x != Math.Round(x)
            ? x.ToString("G4", CultureInfo.InvariantCulture) : value;

    private static string MeanStd(ResultRow r) => r.Std is { } sd ? $"{F(r.Mean)} ± {F(sd)}" : F(r.Mean);

    /// <summary>
    /// A sweep directory's trials.csv (and best.json for the metric's mode): trials that ended with a
    /// metric, by configuration. <paramref name="metric"/>, where given, must be the sweep's own.
    /// </summary>
    public static ResultsTable FromSweep(string sweepDir, string? metric = null)
    {
        var file = Path.Combine(sweepDir, "trials.csv");
        if (!File.Exists(file)) throw new FileNotFoundException($"{file} does not exist: not a sweep directory, or the sweep has not started a trial");
        var lines = File.ReadAllLines(file).Where(l => l.Length > 0).Select(SplitCsv).ToArray();
        var head = lines[0];
        var stateAt = Array.IndexOf(head, "state");
        var scored = head[stateAt + 2];
        if (metric is not null && metric != scored)
            throw new InputException($"metric {metric}: the sweep in {sweepDir} scores its trials on {scored}; for another number of their results, give the trials' run directories");
        metric = scored;
        var columns = head[2..stateAt];
        var mode = "max";
        var best = Path.Combine(sweepDir, "best.json");
        if (File.Exists(best))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(best));
            if (doc.RootElement.TryGetProperty("mode", out var m)) mode = m.GetString() ?? "max";
        }
        var trials = lines[1..];
        var open = trials.Where(c => c[stateAt] is not ("completed" or "stopped" or "failed" or "cancelled")).ToList();
        var unscored = trials.Count(c => c[stateAt] is "completed" or "stopped" && c[stateAt + 2].Length == 0);
        List<string> notes = [];
        if (open.Count > 0)
            notes.Add($"{open.Count} of {trials.Length} trials have not ended ({string.Join(", ", open.GroupBy(c => c[stateAt]).Select(g => $"{g.Count()} {g.Key}"))}): the sweep is not finished, or was stopped; run it again with its --sweep-id to go on");
        if (trials.Count(c => c[stateAt] is "failed" or "cancelled") is var ended and > 0)
            notes.Add($"{ended} trial(s) failed or were cancelled: not in the table");
        if (unscored > 0) notes.Add($"{unscored} ended trial(s) reported no {scored}: not in the table");
        var rows = trials
            .Where(c => c[stateAt] is "completed" or "stopped" && c[stateAt + 2].Length > 0)
            .GroupBy(c => string.Join('\u0001', c[2..stateAt]))
            .Select(g => Row(g.First()[2..stateAt], g.Select(c => (double.Parse(c[stateAt + 2], CultureInfo.InvariantCulture), c[0] + (c[stateAt] == "stopped" ? " (stopped)" : ""))).ToArray()));
        return Sorted(columns, metric, mode, rows) with { Notes = notes };
    }

    /// <summary>
    /// Run directories (each with spec.resolved.yaml and result.json): the columns are the keys whose
    /// values differ between the runs (the seed aside: runs that differ only in it are repeats).
    /// </summary>
    /// <param name="metric">a number of result.json (student_accuracy, teacher_accuracy, baseline_accuracy, student_test_errors, wall_seconds, ...);
    /// errors and seconds are best when least</param>
    public static ResultsTable FromRuns(IReadOnlyList<string> runDirs, string metric = "student_accuracy")
    {
        var all = runDirs.Select(d =>
        {
            var spec = Path.Combine(d, "spec.resolved.yaml");
            var result = Path.Combine(d, "result.json");
            if (!File.Exists(spec) || !File.Exists(result)) throw new InputException($"{d} is not a finished run directory (spec.resolved.yaml and result.json)");
            var keys = Flatten(File.ReadAllText(spec));
            using var doc = JsonDocument.Parse(File.ReadAllText(result));
            var root = doc.RootElement;
            var value = root.TryGetProperty(metric, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : double.NaN;
            return (Dir: d, Keys: keys, Accuracy: value, Has: root.TryGetProperty(metric, out _), Numbers: root.EnumerateObject().Where(p => p.Value.ValueKind == JsonValueKind.Number).Select(p => p.Name).ToArray());
        }).ToArray();
        // a name no result.json has is a typo, not a run without a result
        if (all.Length > 0 && !all.Any(r => r.Has))
            throw new InputException($"metric {metric}: no run's result.json has it; they have {string.Join(", ", all.SelectMany(r => r.Numbers).Distinct().Order(StringComparer.Ordinal))}");
        // one run given twice (overlapping globs), or two runs of one configuration and seed (an
        // actor run and an engine run of it), would count as repeats and shrink the std
        if (all.GroupBy(r => Path.TrimEndingDirectorySeparator(Path.GetFullPath(r.Dir))).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new InputException($"{twice.First().Dir} is given more than once: each run counts once");
        var runs = all.Where(r => double.IsFinite(r.Accuracy)).ToArray();
        List<string> notes = [];
        if (all.Where(r => !double.IsFinite(r.Accuracy)).Select(r => Path.GetFileName(Path.TrimEndingDirectorySeparator(r.Dir))).ToList() is { Count: > 0 } without)
            notes.Add($"not in the table: {string.Join(", ", without)} (no {metric} in their result.json)");
        var columns = runs.SelectMany(r => r.Keys.Keys).Distinct()
            .Where(k => k is not ("name" or "seed") && runs.Select(r => r.Keys.GetValueOrDefault(k, "")).Distinct().Count() > 1)
            .Order(StringComparer.Ordinal).ToArray();
        var groups = runs.GroupBy(r => string.Join('\u0001', columns.Select(c => r.Keys.GetValueOrDefault(c, "")))).ToList();
        foreach (var g in groups)
            if (g.GroupBy(r => r.Keys.GetValueOrDefault("seed", "")).FirstOrDefault(s => s.Count() > 1) is { } same)
                throw new InputException($"{string.Join(" and ", same.Select(r => r.Dir))} are one configuration with the same seed ({same.Key}): not repeats; give one of them");
        var rows = groups
            .Select(g => Row(columns.Select(c => g.First().Keys.GetValueOrDefault(c, "")).ToArray(),
                g.Select(r => (r.Accuracy, Path.GetFileName(Path.TrimEndingDirectorySeparator(r.Dir)))).ToArray()));
        return Sorted(columns, metric, metric.EndsWith("_errors", StringComparison.Ordinal) || metric.EndsWith("seconds", StringComparison.Ordinal) ? "min" : "max", rows) with { Notes = notes };
    }

    /// <summary>A YAML mapping's scalars by dotted path.</summary>
    public static Dictionary<string, string> Flatten(string yaml)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(yaml));
        var keys = new Dictionary<string, string>();
        void Walk(YamlNode n, string prefix)
        {
            switch (n)
            {
                case YamlMappingNode m:
                    foreach (var (k, v) in m.Children) Walk(v, prefix.Length == 0 ? ((YamlScalarNode)k).Value! : $"{prefix}.{((YamlScalarNode)k).Value}");
                    break;
                case YamlScalarNode s: keys[prefix] = s.Value ?? ""; break;
                case YamlSequenceNode q: keys[prefix] = "[" + string.Join(", ", q.Children.Select(c => (c as YamlScalarNode)?.Value ?? "?")) + "]"; break;
            }
        }
        Walk(stream.Documents[0].RootNode, "");
        return keys;
    }

    public string Format()
    {
        string[] head = [.. Columns, $"{Metric} (mean ± std)", "n", "runs"];
        var rows = Rows.Select(r => r.Values.Select(Display).Concat([MeanStd(r), r.Count.ToString(CultureInfo.InvariantCulture), Short(string.Join(" ", r.Sources))]).ToArray()).ToList();
        var widths = head.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        var sb = new StringBuilder();
        sb.AppendLine(string.Join("  ", head.Select((h, i) => h.PadRight(widths[i]))).TrimEnd());
        foreach (var r in rows) sb.AppendLine(string.Join("  ", r.Select((c, i) => c.PadRight(widths[i]))).TrimEnd());
        sb.AppendLine(Best is { } b
            ? $"best ({Mode} {Metric}): {(Columns.Count > 0 ? string.Join(", ", Columns.Select((c, i) => $"{c}={b.Values[i]}")) + ": " : "")}{MeanStd(b)} over {b.Count} run(s)"
            : "no finished runs with a result");
        foreach (var note in Notes) sb.AppendLine($"note: {note}");
        return sb.ToString();
    }

    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.AppendLine(string.Join(',', Columns.Concat([$"{Metric}_mean", $"{Metric}_std", "n", "runs"]).Select(Quote)));
        foreach (var r in Rows)
            sb.AppendLine(string.Join(',', r.Values.Concat([R(r.Mean), r.Std is { } sd ? R(sd) : "", r.Count.ToString(CultureInfo.InvariantCulture), string.Join(' ', r.Sources)]).Select(Quote)));
        return sb.ToString();
    }

    public string ToJson() => JsonSerializer.Serialize(new
    {
        metric = Metric,
        mode = Mode,
        columns = Columns,
        best = Best is { } b ? new { config = Config(b), mean = Round(b.Mean), std = b.Std is { } bsd ? Round(bsd) : (double?)null, n = b.Count } : null,
        rows = Rows.Select(r => new { config = Config(r), mean = Round(r.Mean), std = r.Std is { } sd ? Round(sd) : (double?)null, n = r.Count, runs = r.Sources }),
        notes = Notes,
    }, new JsonSerializerOptions { WriteIndented = true });

    private Dictionary<string, JsonNode?> Config(ResultRow r) => Columns.Select((c, i) => (c, JsonScalar(r.Values[i]))).ToDictionary(x => x.c, x => x.Item2);

    private static string F(double d) => d.ToString("0.###", CultureInfo.InvariantCulture);
    private static string R(double d) => Round(d).ToString("R", CultureInfo.InvariantCulture);

    /// <summary>A mean or std to 10 significant digits: 75.29, not the 75.28999999999999 that summing leaves.</summary>
    private static double Round(double d) =>
        d == 0 || !double.IsFinite(d) ? d : double.Parse(d.ToString("G10", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
    private static string Short(string s) => s.Length <= 50 ? s : s[..47] + "...";
    private static string Quote(string s) => s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;

    /// <summary>One CSV line's fields (quoted fields may hold commas and doubled quotes).</summary>
    public static string[] SplitCsv(string line)
    {
        var fields = new List<string>();
        var sb = new StringBuilder();
        var quoted = false;
        for (var i = 0; i < line.Length; i++)
        {
            var c = line[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < line.Length && line[i + 1] == '"') { sb.Append('"'); i++; }
                else if (c == '"') quoted = false;
                else sb.Append(c);
            }
            else if (c == '"') quoted = true;
            else if (c == ',') { fields.Add(sb.ToString()); sb.Clear(); }
            else sb.Append(c);
        }
        fields.Add(sb.ToString());
        return fields.ToArray();
    }
}
