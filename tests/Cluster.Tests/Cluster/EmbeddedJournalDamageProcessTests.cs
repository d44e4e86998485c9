using System.Text.RegularExpressions;

namespace Cluster.Tests.Cluster;

/// <summary>
/// An embedded run whose SQLite write-ahead log was lost (deleted, damaged, or the journal replaced)
/// refuses to resume and says why, instead of going back to an earlier step. Real `Cluster.Seed`
/// processes killed with -9 (their TorchSharp work is in the node, so the test runs in a process lane).
/// </summary>
[Collection(ProcessLanes.B)]
public sealed class EmbeddedJournalDamageProcessTests
{
    [Theory]
    [InlineData("deleted")]
    [InlineData("damaged")]
    [InlineData("replaced")]
    public void An_embedded_run_whose_sqlite_wal_was_lost_refuses_to_resume_and_says_why(string how)
    {
        Torch.Init();
        using var cluster = new ProcessCluster("wal" + how);
        var teacher = cluster.SaveTeacher(41);
        var spec = Path.Combine(cluster.Work, "wal.yaml");
        File.WriteAllText(spec, ProcessCluster.TinyDafl("wal", 7, teacher, 3000, 3000, "{checkpoint_every: 10}"));
        var runs = Path.Combine(cluster.Work, "runs");
        var dir = Path.Combine(runs, "w1");
        var wal = Path.Combine(dir, "journal.db-wal");
        var shm = Path.Combine(dir, "journal.db-shm");
        // kill -9 mid-run until the log holds commits not yet copied into the database: a log whose
        // frames were all checkpointed loses nothing when deleted, and the resume would be right
        var pending = 0;
        for (var attempt = 0; attempt < 5 && pending == 0; attempt++)
        {
            var log1 = $"run-1-{attempt}.log";
            var first = cluster.Start(cluster.SeedBin, log1, ["run", spec, "--runs-dir", runs, "--run-id", "w1"]);
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (!Regex.Matches(cluster.Log(log1), @"training step (\d+)/").Any(m => int.Parse(m.Groups[1].Value) >= 40 + 25 * attempt))
            {
                Assert.True(DateTime.UtcNow < deadline && !first.HasExited, "the run did not train: " + cluster.Logs(_ => true, 30));
                Thread.Sleep(300);
            }
            first.Kill();
            first.WaitForExit();
            Assert.True(File.Exists(wal) && new FileInfo(wal).Length > 0, "kill -9 left no write-ahead log to lose");
            pending = how == "replaced" ? 1 : UncheckpointedWalFrames(shm, out _);
        }
        Assert.True(pending > 0, "five kills left every write-ahead log frame checkpointed");

        if (how == "replaced")
        {
            // the journal and its witness gone: a fresh database knows nothing of the run, and the
            // run directory's files are what prove it had trained
            foreach (var f in Directory.GetFiles(dir, "journal.db*")) File.Delete(f);
            foreach (var w in Directory.GetDirectories(cluster.Work, "witness", SearchOption.AllDirectories)) Directory.Delete(w, recursive: true);
        }
        else if (how == "deleted")
        {
            File.Delete(wal);
            File.Delete(Path.Combine(dir, "journal.db-shm"));
        }
        else
        {
            // garbage over the log from the middle of its valid frames on: SQLite stops at the first
            // frame whose checksum fails. Only the frames since the log was last reset count (a reset
            // writes from the start again and leaves older frames, with other salts, behind them).
            var bytes = File.ReadAllBytes(wal);
            var valid = ValidWalFrames(bytes, out var frameSize);
            UncheckpointedWalFrames(shm, out var backfilled);
            Assert.True(valid > backfilled, $"the write-ahead log holds {valid} valid frames, {backfilled} of them checkpointed");
            // from a frame not yet in the database on, so that a commit is lost
            using var f = new FileStream(wal, FileMode.Open, FileAccess.Write);
            f.Position = 32 + Math.Max(valid / 2, backfilled) * frameSize;
            var junk = new byte[f.Length - f.Position];
            new Random(3).NextBytes(junk);
            f.Write(junk);
        }
        var rows = File.ReadAllLines(Path.Combine(dir, "metrics.csv")).Length;
        static long Shown(string text) => System.Text.RegularExpressions.Regex.Matches(text, @"training step (\d+)/").Select(m => long.Parse(m.Groups[1].Value)).DefaultIfEmpty(0).Max();
        long stoppedAt;
        using (var status = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "status.json")))) stoppedAt = status.RootElement.GetProperty("step").GetInt64();

        var again = cluster.Start(cluster.SeedBin, "run-2.log", ["run", spec, "--runs-dir", runs, "--run-id", "w1"]);
        Assert.True(ProcessCluster.Ended(again, TimeSpan.FromSeconds(120)), "the run on a damaged journal neither refused nor finished: " + cluster.Logs(_ => true, 30));
        again.WaitForExit();
        var log = cluster.Log("run-2.log");
        Assert.True(again.ExitCode == 1, $"exit {again.ExitCode}: " + log);
        Assert.Contains(how == "replaced" ? "this journal has no record of the run" : "lost events", log);
        // it ended in this command, on what it found at its start: not news of an earlier one
        Assert.DoesNotContain("had already ended before this command", log);
        // a status line may show the run where it stopped (status.json) before an entity's recovery refuses; no step is trained
        Assert.True(Shown(log) <= stoppedAt, $"the refused run showed step {Shown(log)}, past the {stoppedAt} it stopped at: " + log);
        Assert.Equal(rows, File.ReadAllLines(Path.Combine(dir, "metrics.csv")).Length);
    }

    /// <summary>
    /// Committed frames of the write-ahead log not yet copied into the database, from its index
    /// (the -shm file, native byte order): mxFrame of the index header less the checkpoint's
    /// nBackfill (https://sqlite.org/walformat.html#the_wal_index_file_format).
    /// </summary>
    private static int UncheckpointedWalFrames(string shm, out int backfilled)
    {
        var index = File.ReadAllBytes(shm);
        var mxFrame = BitConverter.ToInt32(index, 16);
        backfilled = BitConverter.ToInt32(index, 96);
        return mxFrame - backfilled;
    }

    /// <summary>
    /// The frames of a SQLite write-ahead log that belong to its current generation: those after
    /// the 32-byte header whose salts are the header's (https://sqlite.org/fileformat2.html#walformat).
    /// </summary>
    private static int ValidWalFrames(byte[] wal, out int frameSize)
    {
        var pageSize = (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(wal.AsSpan(8));
        frameSize = 24 + pageSize;
        var salts = wal.AsSpan(16, 8);
        var n = 0;
        for (var at = 32; at + frameSize <= wal.Length && wal.AsSpan(at + 8, 8).SequenceEqual(salts); at += frameSize) n++;
        return n;
    }
}
