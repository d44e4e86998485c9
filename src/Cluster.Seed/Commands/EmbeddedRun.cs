using System.Diagnostics;
using System.Text.Json;
using Cluster.Node.Configuration;

namespace Cluster.Seed.Commands;

/// <summary>
/// Where an embedded run lives: its journal and blobs in the run directory, and, while a `run`
/// process serves it, that process's cluster address (embedded.json), through which `cancel` reaches it.
/// </summary>
internal static class EmbeddedRun
{
    private sealed record Live(int Pid, string Host, int Port);

    public static NodeOptions Options(string runsDir, string runId, bool resumeRuns = true)
    {
        var dir = Path.Combine(runsDir, runId);
        return new NodeOptions
        {
            Persistence = PersistenceOptions.Sqlite(Path.Combine(dir, "journal.db")),
            StoreDir = Path.Combine(dir, "blobs"),
            RunsDir = runsDir,
            LogLevel = "WARNING",
            ResumeRuns = resumeRuns,
        };
    }

    /// <summary>A short-lived member (no roles) of the embedded run's one-node cluster at host:port: joins, asks, leaves.</summary>
    public static async Task<Cluster.Node.Hosting.ClusterNode> Client(string address)
    {
        var tmp = Path.Combine(Path.GetTempPath(), $"clusterdistill-client-{Environment.ProcessId}");
        return await Cluster.Node.Hosting.ClusterNode.StartAsync(new NodeOptions
        {
            Port = 0,
            Seeds = [address],
            Roles = ["client"],
            Persistence = PersistenceOptions.Sqlite(Path.Combine(tmp, "unused.db")),
            StoreDir = Path.Combine(tmp, "blobs"),
            RunsDir = Path.Combine(tmp, "runs"),
            LogLevel = "WARNING",
        }, TimeSpan.FromSeconds(30));
    }

    /// <summary>ERROR_SHARING_VIOLATION: what .NET reports for a file another process holds with FileShare.None (on Linux a held flock, said in the message).</summary>
    private const int SharingViolation = 32;

    /// <summary>
    /// A runs or sweeps folder (or one run's in it), created if missing: a path that cannot be one
    /// (a file, /proc, no permission) is bad input, named with the option that gave it.
    /// </summary>
    public static string Folder(string path, string option)
    {
        if (File.Exists(path)) throw new Distill.Engine.Specs.InputException($"{option} {path} is a file, not a folder");
        try { return Directory.CreateDirectory(path).FullName; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new Distill.Engine.Specs.InputException($"{option} {path}: the folder cannot be made: {e.Message}");
        }
    }

    /// <summary>
    /// Keeps the spec a run or sweep starts with (dir/submitted.yaml), or checks a resume against
    /// it: another spec is refused, naming the keys that differ.
    /// </summary>
    /// <param name="what">"run ID" or "sweep ID"; <paramref name="resume"/>: what to resume it with; <paramref name="idOption"/>: the option that chooses another id.</param>
    public static async Task KeepSpec(string dir, string yaml, string what, string resume, string idOption, CancellationToken ct)
    {
        var file = Path.Combine(dir, "submitted.yaml");
        if (!File.Exists(file))
        {
            await File.WriteAllTextAsync(file, yaml, ct);
            return;
        }
        var before = await File.ReadAllTextAsync(file, ct);
        if (before != yaml)
            throw new Distill.Engine.Specs.InputException($"{what} exists in {dir} with a different spec{Distill.Engine.Specs.SpecDiff.Describe(before, yaml)}; resume it with {resume}, or choose another {idOption}");
    }

    /// <summary>
    /// Holds `dir` for this process (an exclusive lock on dir/.lock, released when disposed or when
    /// the process dies): a second `run` or `sweep` of the same id would write the same journal.
    /// </summary>
    /// <param name="what">"run ID" or "sweep ID", for the error.</param>
    /// <param name="option">The option that chooses another id.</param>
    public static IDisposable Hold(string dir, string what, string option)
    {
        var path = Path.Combine(dir, ".lock");
        try { return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException e) when ((e.HResult & 0xFFFF) == SharingViolation || e.Message.Contains("being used by another process", StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"{what} is running in another process already ({path} is held); stop that one first, or choose another {option}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidOperationException($"cannot lock {path} for {what}: {e.Message}", e);
        }
    }

    public static bool Exists(string runsDir, string runId) => File.Exists(Path.Combine(runsDir, runId, "journal.db"));

    private static string LiveFile(string runsDir, string runId) => Path.Combine(runsDir, runId, "embedded.json");

    public static void Announce(string runsDir, string runId, string host, int port) =>
        File.WriteAllText(LiveFile(runsDir, runId), JsonSerializer.Serialize(new Live(Environment.ProcessId, host, port)));

    public static void Withdraw(string runsDir, string runId)
    {
        try { File.Delete(LiveFile(runsDir, runId)); }
        catch (IOException) { }
    }

    /// <summary>host:port of the `run` process serving the run, if one is alive.</summary>
    public static string? Serving(string runsDir, string runId)
    {
        var file = LiveFile(runsDir, runId);
        if (!File.Exists(file)) return null;
        var live = JsonSerializer.Deserialize<Live>(File.ReadAllText(file));
        if (live is null) return null;
        try
        {
            using var p = Process.GetProcessById(live.Pid);
            return p.HasExited ? null : $"{live.Host}:{live.Port}";
        }
        catch (ArgumentException) { return null; }   // no such process
    }
}
