using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Distill.Engine.Methods;
using Distill.Engine.Specs;

namespace Distill.Engine.Runs;

/// <summary>
/// runs/&lt;run-id&gt;/: spec.yaml (as given) and spec.resolved.yaml (every default filled in),
/// metrics.csv (and the same as TensorBoard scalars in tensorboard/), events.log, samples/*.png,
/// checkpoints/, result.json.
/// Checkpoints are written to a temporary file and renamed, with a SHA-256 beside them, so a crash
/// never leaves a half-written file that looks valid.
/// </summary>
public sealed class RunDirectory : IDisposable
{
    private readonly StreamWriter events;
    private StreamWriter? metrics;
    private string[] metricColumns = [];

    public RunDirectory(string path)
    {
        Path = path;
        Directory.CreateDirectory(path);
        Directory.CreateDirectory(System.IO.Path.Combine(path, "samples"));
        Directory.CreateDirectory(System.IO.Path.Combine(path, "checkpoints"));
        events = new StreamWriter(System.IO.Path.Combine(path, "events.log"), append: true) { AutoFlush = true };
    }

    public string Path { get; }

    /// <summary>
    /// What a run directory holds that only a run that trained writes (metrics rows, checkpoints,
    /// the result, the student), described; null when it holds none of it. A spec written before
    /// the submit, or an events log, is not work.
    /// </summary>
    public static string? PriorWork(string path)
    {
        if (!Directory.Exists(path)) return null;
        var found = new List<string>();
        var metrics = System.IO.Path.Combine(path, "metrics.csv");
        if (System.IO.File.Exists(metrics) && System.IO.File.ReadLines(metrics).Skip(1).Take(1_000_000).Count() is var rows and > 0)
            found.Add($"metrics.csv with {rows} rows");
        var checkpoints = System.IO.Path.Combine(path, "checkpoints");
        if (Directory.Exists(checkpoints) && Directory.EnumerateFiles(checkpoints).Count() is var n and > 0) found.Add($"{n} files in checkpoints/");
        foreach (var name in new[] { "result.json", "student.pt" })
            if (System.IO.File.Exists(System.IO.Path.Combine(path, name))) found.Add(name);
        return found.Count == 0 ? null : string.Join(", ", found);
    }

    /// <summary>
    /// Where metrics rows go instead of metrics.csv: a teacher entity sends its rows to the run
    /// coordinator, which alone writes the run directory's CSV (the entity may be on another node).
    /// </summary>
    public Action<string, long, IReadOnlyDictionary<string, double>>? MetricsSink { get; init; }

    /// <summary>Also told each event line (without its time): a teacher entity's go to the run's events.log through the coordinator.</summary>
    public Action<string>? EventSink { get; init; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Event(string message)
    {
        // one event, one line: text from outside (a cancel's reason, a spec's file name) cannot add events of its own
        message = OneLine(message);
        var line = $"{DateTimeOffset.UtcNow:O} {message}";
        events.WriteLine(line);
        EventSink?.Invoke(message);
    }

    /// <summary>The text with its line breaks and other control characters as visible escapes (\n, \r, \t, \uXXXX).</summary>
    public static string OneLine(string text)
    {
        if (!text.Any(char.IsControl)) return text;
        var b = new StringBuilder(text.Length + 8);
        foreach (var c in text)
            b.Append(c switch
            {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                _ when char.IsControl(c) => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        return b.ToString();
    }

    /// <summary>Every column any phase may log, so that one CSV header serves the whole run.</summary>
    public static readonly IReadOnlyList<string> KnownColumns =
        ["test_accuracy", "val_accuracy", "loss", "loss_kd", "kl_kd", "loss_g", "loss_oh", "loss_a", "loss_ie", "classes", "gen_std", "ce", "r_feature", "r_tv", "r_l2", "r_compete",
         "batch_accuracy", "best_loss", "lr", "lr_s", "lr_g", "lr_x", "pool", "synth_step", "rss_mb"];

    /// <summary>The rss_mb column: this process's resident memory, so that a long run's metrics show whether it stays flat.</summary>
    public static double ResidentMegabytes() => Math.Round(Environment.WorkingSet / 1048576.0, 1);

    /// <summary>
    /// One CSV row per logged step; columns fixed by the first row (phase-specific ones blank elsewhere).
    /// An existing metrics.csv (a run coordinator that took over after a failover) is appended to,
    /// under its own header.
    /// </summary>
    public void Metrics(string phase, long step, double seconds, IReadOnlyDictionary<string, double> values, IEnumerable<string> allColumns)
    {
        if (MetricsSink is not null)
        {
            MetricsSink(phase, step, values);
            return;
        }
        if (metrics is null)
        {
            var file = File("metrics.csv");
            var header = System.IO.File.Exists(file) ? System.IO.File.ReadLines(file).FirstOrDefault() : null;
            if (header is not null && header.StartsWith("phase,step,seconds", StringComparison.Ordinal))
            {
                metricColumns = header.Split(',')[3..];
                metrics = new StreamWriter(file, append: true) { AutoFlush = false };
            }
            else
            {
                metricColumns = allColumns.ToArray();
                metrics = new StreamWriter(file, append: false) { AutoFlush = false };
                metrics.WriteLine("phase,step,seconds," + string.Join(',', metricColumns));
            }
        }
        var sb = new StringBuilder().Append(phase).Append(',').Append(step).Append(',').Append(seconds.ToString("F2", CultureInfo.InvariantCulture));
        foreach (var c in metricColumns)
            sb.Append(',').Append(values.TryGetValue(c, out var v) ? v.ToString("G6", CultureInfo.InvariantCulture) : "");
        metrics.WriteLine(sb.ToString());
        metrics.Flush();
        TensorBoard(phase, step, values);
    }

    private TorchSharp.Modules.SummaryWriter? board;
    private bool boardFailed;

    /// <summary>
    /// The same values as TensorBoard scalars (tensorboard/events.out.tfevents.*, tag "phase/column"),
    /// with TorchSharp's SummaryWriter. A disk error here is said once in events.log and never stops the run.
    /// </summary>
    private void TensorBoard(string phase, long step, IReadOnlyDictionary<string, double> values)
    {
        if (boardFailed) return;
        try
        {
            board ??= TorchSharp.torch.utils.tensorboard.SummaryWriter(File("tensorboard"));
            foreach (var (name, v) in values)
                if (double.IsFinite(v)) board.add_scalar($"{phase}/{name}", (float)v, (int)Math.Min(step, int.MaxValue));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            boardFailed = true;
            Event($"TensorBoard files not written: {e.Message}");
        }
    }

    public void Samples(string phase, long step, byte[] png) =>
        System.IO.File.WriteAllBytes(File($"samples/{phase}-step{step:D7}.png"), png);

    public string SaveCheckpoint(IStepTrainer trainer, int keep = 3)
    {
        var name = $"checkpoints/{trainer.Phase}-step{trainer.Step:D7}.ckpt";
        var path = File(name);
        using (var ms = new MemoryStream())
        {
            using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true)) trainer.SaveState(w);
            var bytes = ms.ToArray();
            System.IO.File.WriteAllBytes(path + ".tmp", bytes);
            System.IO.File.WriteAllText(path + ".sha256", Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant());
            System.IO.File.Move(path + ".tmp", path, overwrite: true);
        }
        foreach (var old in Directory.GetFiles(File("checkpoints"), $"{trainer.Phase}-step*.ckpt").Order().SkipLast(keep))
        {
            System.IO.File.Delete(old);
            System.IO.File.Delete(old + ".sha256");
        }
        return path;
    }

    /// <summary>Loads a checkpoint after checking its hash; names the file when it is corrupt.</summary>
    public static void LoadCheckpoint(IStepTrainer trainer, string path)
    {
        var bytes = System.IO.File.ReadAllBytes(path);
        var hashFile = path + ".sha256";
        if (System.IO.File.Exists(hashFile))
        {
            var expected = System.IO.File.ReadAllText(hashFile).Trim();
            var actual = Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant();
            if (expected != actual) throw new InvalidDataException($"checkpoint {path} is corrupt: SHA-256 {actual} does not match {expected}");
        }
        using var r = new BinaryReader(new MemoryStream(bytes));
        try { trainer.LoadState(r); }
        catch (EndOfStreamException e) { throw new InvalidDataException($"checkpoint {path} is truncated", e); }
    }

    /// <summary>spec.yaml as given and spec.resolved.yaml with every default filled in.</summary>
    public void WriteSpec(RunSpec spec)
    {
        System.IO.File.WriteAllText(File("spec.yaml"), spec.SourceText);
        System.IO.File.WriteAllText(File("spec.resolved.yaml"),
            $"# {spec.SourceFile} with every default filled in\n" + Specs.SpecParser.Write(spec));
    }

    public void WriteResult(RunResult result) => WriteResult(Path, result);

    private static readonly JsonSerializerOptions ResultJson = new() { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>result.json in a run directory (also written by the cluster's run coordinator), whole or not at all.</summary>
    public static void WriteResult(string runDir, RunResult result)
    {
        var file = System.IO.Path.Combine(runDir, "result.json");
        System.IO.File.WriteAllText(file + ".tmp", JsonSerializer.Serialize(result, ResultJson));
        System.IO.File.Move(file + ".tmp", file, overwrite: true);
    }

    /// <summary>A run directory's result.json; null where there is none yet. A file that does not read as one is an <see cref="InvalidDataException"/>.</summary>
    public static RunResult? ReadResult(string runDir)
    {
        var file = System.IO.Path.Combine(runDir, "result.json");
        if (!System.IO.File.Exists(file)) return null;
        try { return JsonSerializer.Deserialize<RunResult>(System.IO.File.ReadAllText(file), ResultJson) ?? throw new JsonException("null"); }
        catch (JsonException e) { throw new InvalidDataException($"{file} is not a result: {e.Message}", e); }
    }

    public void Dispose()
    {
        events.Dispose();
        metrics?.Dispose();
    }
}
