using Akka.Actor;
using System.Diagnostics;
using System.Text.RegularExpressions;
using Cluster.Contracts;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Node.Actors;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Cluster.Node.Storage;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Cluster.Tests.Cluster;

/// <summary>
/// A journal that lost events it had acknowledged (a deleted or damaged SQLite WAL, rows gone) is
/// noticed through its witness, and the run says so and stops, instead of silently going back to
/// an earlier step or to step 0.
/// </summary>
[Collection("mnist")]
public sealed class JournalDamageTests
{
    [Fact]
    public void A_witness_vouches_only_for_its_own_journal_and_a_torn_one_for_nothing()
    {
        var root = Path.Combine(Path.GetTempPath(), $"cd-witness-{Guid.NewGuid():N}");
        try
        {
            var w = new JournalWitness(root, "sqlite:Data Source=/a/journal.db");
            Assert.Equal(0, w.Recorded("student-r/student/0"));
            Assert.Null(w.Loss("student-r/student/0", 0));
            w.Record("student-r/student/0", 57);
            Assert.Equal(57, w.Recorded("student-r/student/0"));
            Assert.Null(w.Loss("student-r/student/0", 57));
            var loss = w.Loss("student-r/student/0", 12);
            Assert.Contains("lost events of student-r/student/0: it recovered up to event 12, but had acknowledged 57", loss);
            Assert.Contains(w.FileOf("student-r/student/0"), loss);
            // the file of one id never names another's
            Assert.NotEqual(w.FileOf("a/b"), w.FileOf("a+b/"));
            // a fresh database on the same store: the witness is not its evidence
            Assert.Equal(0, new JournalWitness(root, "sqlite:Data Source=/b/journal.db").Recorded("student-r/student/0"));
            // torn by a crash mid-write
            File.WriteAllText(w.FileOf("student-r/student/0"), "5");
            Assert.Equal(0, w.Recorded("student-r/student/0"));
            // a tracker moves it on only after checking recovery, and never below a loss on record
            w.Record("t", 9);
            var tracker = w.For("t");
            tracker.Acknowledged(3);
            Assert.Equal(9, w.Recorded("t"));
            Assert.NotNull(tracker.Recovered(2));
            tracker.Acknowledged(4);
            Assert.Equal(9, w.Recorded("t"));
            tracker.Acknowledged(11);
            Assert.Equal(11, w.Recorded("t"));
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [Fact]
    public async Task The_sqlite_journal_syncs_every_commit_before_it_is_acknowledged()
    {
        // persist before acknowledge: in WAL mode, synchronous=FULL syncs the WAL at each commit
        // (NORMAL would lose the last commits on power loss); the plugin's connections are opened
        // with this same connection string, and the WAL mode is kept in the file itself
        var file = Path.Combine(Path.GetTempPath(), $"cd-sync-{Guid.NewGuid():N}", "journal.db");
        var options = PersistenceOptions.Sqlite(file);
        try
        {
            await PersistenceCheck.EnsureReachableAsync(options);
            await using var c = new SqliteConnection(options.ConnectionString);
            await c.OpenAsync();
            await using var cmd = c.CreateCommand();
            cmd.CommandText = "PRAGMA journal_mode;";
            Assert.Equal("wal", (string?)await cmd.ExecuteScalarAsync());
            cmd.CommandText = "PRAGMA synchronous;";
            Assert.Equal(2L, (long)(await cmd.ExecuteScalarAsync())!);
        }
        finally
        {
            SqliteConnection.ClearAllPools();
            Directory.Delete(Path.GetDirectoryName(file)!, recursive: true);
        }
    }

    [Theory]
    [MemberData(nameof(ActorHarness.Providers), MemberType = typeof(ActorHarness))]
    public void An_entity_whose_journal_lost_events_fails_the_run_with_the_reason_and_does_not_start_over(string provider)
    {
        using var h = new ActorHarness(provider, "lostjournal");
        var run = $"j{Guid.NewGuid():N}"[..12];
        var id = EntityId.Teacher(run);
        var blob = h.TeacherBlob();
        var teacher = h.Sys.ActorOf(TeacherEntity.GetProps(id, h.Services));
        teacher.Tell(new StartEntity(id, run, ActorHarness.Spec("lostjournal"), blob));
        teacher.Tell(new GetEntityStatus(id), h.Students);
        Assert.True(h.Students.ExpectMsg<EntityStatus>(TimeSpan.FromSeconds(60)).Started);
        h.Stop(teacher);
        Assert.Equal(1, h.Services.Witness.Recorded("teacher-" + id));

        // the journal loses the entity's events (as a lost WAL or an old backup would)
        var sql = "DELETE FROM journal WHERE persistence_id = @id";
        if (provider == ActorHarness.Sqlite)
        {
            using var c = new SqliteConnection(h.Options.Persistence.ConnectionString);
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = sql;
            cmd.Parameters.AddWithValue("@id", "teacher-" + id);
            Assert.Equal(1, cmd.ExecuteNonQuery());
        }
        else
        {
            using var c = new NpgsqlConnection(h.Options.Persistence.ConnectionString);
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = sql;
            cmd.Parameters.AddWithValue("@id", "teacher-" + id);
            Assert.Equal(1, cmd.ExecuteNonQuery());
        }

        teacher = h.Sys.ActorOf(TeacherEntity.GetProps(id, h.Services));
        teacher.Tell(new StartEntity(id, run, ActorHarness.Spec("lostjournal"), blob));
        var failed = h.Coordinator.FishForMessage<EntityFailed>(_ => true, TimeSpan.FromSeconds(60));
        Assert.Equal(run, failed.RunId);
        Assert.Contains("lost events of teacher-" + id + ": it recovered up to event 0, but had acknowledged 1", failed.Reason);
        // asked to start (the coordinator's nudge), it refuses again rather than start over
        Assert.Contains("lost events", h.Coordinator.FishForMessage<EntityFailed>(_ => true, TimeSpan.FromSeconds(30)).Reason);
        teacher.Tell(new GetEntityStatus(id), h.Students);
        Assert.Equal("failed: its journal lost events", h.Students.ExpectMsg<EntityStatus>(TimeSpan.FromSeconds(30)).Detail);
        Assert.Equal(1, h.Services.Witness.Recorded("teacher-" + id));
    }

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

        var again = cluster.Start(cluster.SeedBin, "run-2.log", ["run", spec, "--runs-dir", runs, "--run-id", "w1"]);
        Assert.True(ProcessCluster.Ended(again, TimeSpan.FromSeconds(120)), "the run on a damaged journal neither refused nor finished: " + cluster.Logs(_ => true, 30));
        again.WaitForExit();
        var log = cluster.Log("run-2.log");
        Assert.True(again.ExitCode == 1, $"exit {again.ExitCode}: " + log);
        Assert.Contains(how == "replaced" ? "this journal has no record of the run" : "lost events", log);
        // a status line may show the run at step 0 before an entity's recovery refuses; no step is trained
        Assert.DoesNotMatch(@"training step [1-9]", log);
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
