using System.Text.Json;
using Cluster.Contracts.Runs;

namespace Cluster.Node.Actors;

/// <summary>
/// Which of each entity's reports (metrics rows, sample grids) a run's files already have: for each
/// entity, the Seq up to which every report was written or given up by the entity. Kept in the run's
/// reports.json, written after each report's row and before its acknowledgement, so that a
/// coordinator that starts again (a seed restart, a hand-over) neither writes a row twice nor waits
/// for one that will never come. Decisions are pure; only <see cref="Wrote"/> touches the file.
/// </summary>
public sealed class ReportLedger
{
    public const string FileName = "reports.json";

    /// <summary>What to do with a report: write it, skip it (written before), or ask for the ones before it.</summary>
    public enum Verdict { Write, Known, Missing }

    private readonly Dictionary<string, long> written;
    private readonly string? file;

    private ReportLedger(Dictionary<string, long> written, string? file)
    {
        this.written = written;
        this.file = file;
    }

    /// <summary>An empty ledger that is not kept in a file (tests).</summary>
    public static ReportLedger InMemory() => new([], null);

    /// <summary>
    /// The run directory's ledger; a missing file is an empty one (a new run, or one from before
    /// reports were numbered). An unreadable one is too, with the reason in `problem`: at worst some
    /// rows are written twice, none is lost.
    /// </summary>
    public static ReportLedger Open(string runDir, out string? problem)
    {
        problem = null;
        var path = Path.Combine(runDir, FileName);
        try
        {
            if (File.Exists(path))
                return new(JsonSerializer.Deserialize<Dictionary<string, long>>(File.ReadAllText(path)) ?? [], path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            problem = $"{path} unreadable ({e.Message}); reports are taken as new";
        }
        return new([], path);
    }

    /// <summary>Every report of the entity up to this Seq is in the files (0: none yet).</summary>
    public long WrittenUpTo(string entityId) => written.GetValueOrDefault(entityId);

    /// <summary>
    /// A report in order (every one before it is written, or was given up by its entity: its
    /// Previous is written) is written; one already written is skipped; one after a report the
    /// coordinator never had waits for it. An unnumbered report (a sender that does not number them)
    /// is written as it comes.
    /// </summary>
    public Verdict Judge(string entityId, ReportHeader? report)
    {
        if (report is null) return Verdict.Write;
        var upTo = WrittenUpTo(entityId);
        if (report.Seq <= upTo) return Verdict.Known;
        return report.Previous <= upTo ? Verdict.Write : Verdict.Missing;
    }

    /// <summary>The report is in the files: the ledger says so, on disk before the acknowledgement goes out.</summary>
    public void Wrote(string entityId, long seq)
    {
        if (seq <= WrittenUpTo(entityId)) return;
        written[entityId] = seq;
        if (file is null) return;
        var tmp = file + ".tmp";
        File.WriteAllText(tmp, JsonSerializer.Serialize(written));
        File.Move(tmp, file, overwrite: true);
    }
}
