using Akka.Actor;
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
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
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
}
