using System.Diagnostics;
using Distill.Engine.Models;
using Npgsql;
using static TorchSharp.torch;

namespace Cluster.Tests.Cluster;

/// <summary>
/// Real node processes for the multi-process tests: a work directory, a PostgreSQL database of its
/// own, the seed and GPU-node binaries, every process's output in a log file, and on disposal every
/// process killed, the database dropped and the directory deleted (also when the test fails).
/// </summary>
public sealed class ProcessCluster : IDisposable
{
    private readonly string pg;
    private readonly string db;
    private readonly List<Process> processes = [];

    /// <param name="server">the PostgreSQL server's connection string (its database "clusterdistill"); default: the one scripts/test.sh started</param>
    public ProcessCluster(string name, string? server = null)
    {
        pg = server ?? Environment.GetEnvironmentVariable("CLUSTERDISTILL_PG")
             ?? throw new InvalidOperationException("CLUSTERDISTILL_PG is not set: run the tests through scripts/test.sh");
        Work = Path.Combine(Path.GetTempPath(), $"cd-{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Work);
        db = $"cd_{name}_{Guid.NewGuid():N}"[..24];
        using (var c = new NpgsqlConnection(pg)) { c.Open(); using var cmd = c.CreateCommand(); cmd.CommandText = $"CREATE DATABASE {db}"; cmd.ExecuteNonQuery(); }
        var conn = "postgres:" + pg.Replace("Database=clusterdistill", $"Database={db}");
        Common = ["--db", conn, "--store", Path.Combine(Work, "store"), "--runs-dir", Path.Combine(Work, "runs")];
        HttpPort = TestPorts.Block(1);
        Token = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
        var root = Repo.Root();
        SeedBin = Path.Combine(root, "src/Cluster.Seed/bin/Release/net10.0/Cluster.Seed");
        GpuBin = Path.Combine(root, "src/Cluster.GpuNode/bin/Release/net10.0/Cluster.GpuNode");
    }

    public string Work { get; }

    /// <summary>The seed's HTTP port (serve --http-port), and its API's URL for the CLI (--server).</summary>
    public int HttpPort { get; }
    public string Server => $"http://127.0.0.1:{HttpPort}";

    /// <summary>The API token every process of this cluster gets (CLUSTERDISTILL_TOKEN).</summary>
    public string Token { get; }
    public string SeedBin { get; }
    public string GpuBin { get; }

    /// <summary>The database, blob store and runs directory every node of this cluster shares.</summary>
    public string[] Common { get; }

    /// <summary>The processes started so far, in order.</summary>
    public IReadOnlyList<Process> Processes => processes;

    /// <summary>
    /// The small DAFL run the process tests share: the seeded random teacher of <see cref="SaveTeacher"/>,
    /// a width-8 generator and batches of 16, a few seconds per hundred steps on two cores. A random
    /// teacher labels nearly every image one class, so the source's collapse check (guard.min_classes)
    /// is off: it would take the generator back at every check and fail the run (SourceGuardTests test it).
    /// </summary>
    public static string TinyDafl(string name, int seed, string teacher, int steps, int evalEvery, string? cluster = null) => $$"""
        name: {{name}}
        method: dafl
        seed: {{seed}}
        data: {name: mnist, image_size: 32}
        teacher:
          arch: lenet5
          checkpoint: {{teacher}}
        student:
          arch: lenet5-half
          train: {optimizer: adam, lr: 0.002}
        dafl: {steps: {{steps}}, batch_size: 16, generator_width: 8, generator_lr: 0.02, activation: code, entropy: code, eval_every: {{evalEvery}}}
        guard: {min_classes: 1}

        """ + (cluster is null ? "" : $"cluster: {cluster}\n");

    /// <summary>A LeNet-5 teacher (random weights, seeded) saved as teacher.pt in the work directory.</summary>
    public string SaveTeacher(long seed) => SaveModel("lenet5", seed, "teacher.pt");

    /// <summary>A seeded random model of the architecture (MNIST-shaped), saved in the work directory.</summary>
    public string SaveModel(string arch, long seed, string file)
    {
        var path = Path.Combine(Work, file);
        // alone: the two process lanes seed TorchSharp's one generator, beside the torch lane's tests
        return TorchLane.Run(() =>
        {
            manual_seed(seed);
            using var model = ModelFactory.Create(arch, 1, 32, 10);
            model.save(path);
            return path;
        });
    }

    /// <summary>
    /// <see cref="Start"/> with SIGINT unblocked and at its default, as a shell starts a command: a
    /// child inherits the signal mask of the thread that forks it and any ignored signal, and in a
    /// test host full of other tests' threads that is not guaranteed (perl is in every Debian).
    /// </summary>
    public Process StartInterruptible(string exe, string log, params string[] args) =>
        Start("perl", log, ["-MPOSIX", "-e", "sigprocmask(SIG_SETMASK, POSIX::SigSet->new); $SIG{INT} = 'DEFAULT'; exec { $ARGV[0] } @ARGV or die \"exec: $!\"", exe, .. args]);

    /// <summary>A process's blocked and ignored signal masks (/proc), for a failure message.</summary>
    public static string SignalMasks(int pid)
    {
        try { return string.Join(", ", File.ReadAllLines($"/proc/{pid}/status").Where(l => l.StartsWith("SigBlk") || l.StartsWith("SigIgn"))); }
        catch (IOException) { return "(gone)"; }
    }

    public Process Start(string exe, string log, params string[] args)
    {
        var psi = new ProcessStartInfo(exe, args) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Work };
        OneThread(psi);
        psi.Environment["CLUSTERDISTILL_TOKEN"] = Token;
        var p = Process.Start(psi)!;
        var writer = new StreamWriter(Path.Combine(Work, log)) { AutoFlush = true };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (writer) writer.WriteLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (writer) writer.WriteLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        processes.Add(p);
        return p;
    }

    /// <summary>
    /// One libtorch thread for a node process: the process tests run two clusters at once
    /// (ProcessLanes), a dozen processes on two cores, where OpenMP teams of two spinning threads
    /// each made them three times slower.
    /// </summary>
    public static void OneThread(ProcessStartInfo psi)
    {
        psi.Environment["OMP_NUM_THREADS"] = "1";
        psi.Environment["MKL_NUM_THREADS"] = "1";
    }

    public string Log(string name) => File.ReadAllText(Path.Combine(Work, name));

    /// <summary>Whether the process ended within the time, and then its output read to the end (a timed wait does not wait for that).</summary>
    public static bool Ended(Process p, TimeSpan within)
    {
        if (!p.WaitForExit(within)) return false;
        p.WaitForExit();
        return true;
    }

    /// <summary>Waits until every named GPU node's log says it is up (its shard regions are registered).</summary>
    public void WaitUntilUp(DateTime deadline, params string[] logs)
    {
        // and the seed, where this cluster has one logging to seed.log: a submission before it is up is refused
        while (logs.Any(f => !Log(f).Contains("[gpu-node] up at")) || File.Exists(Path.Combine(Work, "seed.log")) && !Log("seed.log").Contains("seed node up at"))
        {
            if (DateTime.UtcNow >= deadline) throw new TimeoutException("GPU nodes did not come up: " + Logs(_ => true, 20));
            Thread.Sleep(250);
        }
    }

    /// <summary>The last lines of every log (those the filter keeps, plus every non-INFO line), for assertion messages.</summary>
    public string Logs(Func<string, bool> keepInfo, int lines) =>
        string.Join("\n", Directory.GetFiles(Work, "*.log").Select(f => $"--- {Path.GetFileName(f)}\n" +
            string.Join("\n", File.ReadAllLines(f).Where(l => !l.Contains("[INFO]") || keepInfo(l)).TakeLast(lines))));

    public void Dispose()
    {
        foreach (var p in processes)
        {
            try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.Dispose();
        }
        try { using var c = new NpgsqlConnection(pg); c.Open(); using var cmd = c.CreateCommand(); cmd.CommandText = $"DROP DATABASE IF EXISTS {db} WITH (FORCE)"; cmd.ExecuteNonQuery(); }
        catch (NpgsqlException) { }
        // CLUSTERDISTILL_KEEP_LOGS=1 keeps the folder (logs, runs) for a failure to be read afterwards
        if (Environment.GetEnvironmentVariable("CLUSTERDISTILL_KEEP_LOGS") != "1")
            try { Directory.Delete(Work, true); } catch (IOException) { }
    }
}
