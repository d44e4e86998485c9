using System.Text.Json;
using Akka.Actor;
using Cluster.Contracts;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Node.Actors;

namespace Cluster.Tests.Cluster;

public sealed class CoordinatorTests
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(30);

    [Theory]
    [MemberData(nameof(ActorHarness.Providers), MemberType = typeof(ActorHarness))]
    public void Should_refuse_bad_specs_start_teacher_then_pipeline_and_keep_runs_across_restarts(string provider)
    {
        using var h = new ActorHarness(provider, "coord");
        var client = h.Kit.CreateTestProbe();
        var coordinator = h.Sys.ActorOf(RunCoordinator.GetProps(h.Services));

        coordinator.Tell(new SubmitRun("name: x\nmethod: dafl\nbogus: 1\n", "bad.yaml", null), client);
        var rejected = client.ExpectMsg<RunRejected>(Long);
        Assert.Contains("bad.yaml", rejected.Reason);

        var spec = ActorHarness.Spec("coord", replicas: 2);
        coordinator.Tell(new SubmitRun(spec, "coord.yaml", "run-a"), client);
        Assert.Equal("run-a", client.ExpectMsg<RunAccepted>(Long).RunId);
        var teacherStart = h.Teachers.ExpectMsg<StartEntity>(Long);
        Assert.Equal((EntityId.Teacher("run-a"), (string?)null), (teacherStart.EntityId, teacherStart.TeacherBlob));
        // nothing downstream before the teacher exists
        h.Generators.ExpectNoMsg(TimeSpan.FromMilliseconds(300));

        // the teacher entity's training rows reach the run directory through the coordinator
        coordinator.Tell(new RunMetrics("run-a", EntityId.Teacher("run-a"), 20, ["loss", "test_accuracy"], [0.25, 97.5]));
        var blob = new string('a', 64);
        coordinator.Tell(new TeacherReady("run-a", blob, 97.5, Seconds: 12.5, FromCache: false));
        Assert.Equal(blob, h.Generators.ExpectMsg<StartEntity>(Long).TeacherBlob);
        var students = new[] { h.Students.ExpectMsg<StartEntity>(Long), h.Students.ExpectMsg<StartEntity>(Long) };
        Assert.Equal([EntityId.Student("run-a", 0), EntityId.Student("run-a", 1)], students.Select(s => s.EntityId).Order());

        // same spec again: the same run (resubmission resumes); another spec under that id: refused
        coordinator.Tell(new SubmitRun(spec, "coord.yaml", "run-a"), client);
        Assert.True(client.ExpectMsg<RunAccepted>(Long).AlreadyKnown);
        coordinator.Tell(new SubmitRun(ActorHarness.Spec("coord", steps: 99), "coord.yaml", "run-a"), client);
        // naming the keys that differ
        Assert.Contains("dafl.steps: 12, now 99", client.ExpectMsg<RunRejected>(Long).Reason);

        h.Stop(coordinator);
        var again = h.Sys.ActorOf(RunCoordinator.GetProps(h.Services));
        again.Tell(new GetRunStatus("run-a"), client);
        var status = Assert.Single(client.ExpectMsg<RunStatusReport>(Long).Runs);
        Assert.Equal((RunState.Training, 97.5), (status.State, status.TeacherAccuracy));
        // a recovered coordinator starts every unfinished run's entities again (idempotent for them)
        h.Generators.FishForMessage(m => m is StartEntity { EntityId: var e } && e == EntityId.Generator("run-a"), Long);

        again.Tell(new EntityProgress("run-a", EntityId.Student("run-a", 0), 8, 12, 1, 0, 88.0, "node-1", null));
        again.Tell(new EntityProgress("run-a", EntityId.Generator("run-a"), 10, 12, 0, 2, null, "node-1", null, SourceRollbacks: 3));
        again.Tell(new StudentFinished("run-a", EntityId.Student("run-a", 0), 91.25, 92.5, 12, "", 2));
        h.Generators.FishForMessage(m => m is StopEntity, Long);
        h.Students.FishForMessage(m => m is StopEntity, Long);
        h.Kit.AwaitAssert(() => Assert.True(File.Exists(Path.Combine(h.Options.RunsDir, "run-a", "result.json"))), Long);
        using var result = JsonDocument.Parse(File.ReadAllText(Path.Combine(h.Options.RunsDir, "run-a", "result.json")));
        Assert.Equal(91.25, result.RootElement.GetProperty("student_accuracy").GetDouble());
        Assert.Equal(97.5, result.RootElement.GetProperty("teacher_accuracy").GetDouble());
        // how the teacher was obtained survives the coordinator's restart (journal or snapshot)
        Assert.Equal(12.5, result.RootElement.GetProperty("teacher_seconds").GetDouble());
        Assert.False(result.RootElement.GetProperty("teacher_from_cache").GetBoolean());
        var teacherRow = EmbeddedRunTests.MetricRows(Path.Combine(h.Options.RunsDir, "run-a", "metrics.csv"))[("teacher", 20)];
        Assert.Equal((0.25, 97.5), (teacherRow["loss"], teacherRow["test_accuracy"]));
        Assert.Equal(12, result.RootElement.GetProperty("steps").GetInt64());
        Assert.Equal(2, result.RootElement.GetProperty("rollbacks").GetInt32());   // the student's guard rollbacks
        Assert.Equal(3, result.RootElement.GetProperty("source_rollbacks").GetInt32());   // the generator's, as it last reported them
        Assert.False(result.RootElement.GetProperty("student_used_real_data").GetBoolean());
        again.Tell(new GetRunStatus(null), client);
        Assert.Equal(RunState.Completed, Assert.Single(client.ExpectMsg<RunStatusReport>(Long).Runs).State);
    }

    [Fact]
    public void Should_fail_a_run_when_an_entity_reports_it_cannot_go_on()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "fail");
        var client = h.Kit.CreateTestProbe();
        var coordinator = h.Sys.ActorOf(RunCoordinator.GetProps(h.Services));
        coordinator.Tell(new SubmitRun(ActorHarness.Spec("f"), "f.yaml", "run-f"), client);
        client.ExpectMsg<RunAccepted>(Long);
        coordinator.Tell(new EntityFailed("run-f", EntityId.Generator("run-f"), "loss is NaN"));
        h.Kit.AwaitAssert(() =>
        {
            coordinator.Tell(new GetRunStatus("run-f"), client);
            var s = Assert.Single(client.ExpectMsg<RunStatusReport>(Long).Runs);
            Assert.Equal(RunState.Failed, s.State);
            Assert.Contains("loss is NaN", s.Message);
        }, Long);
        // every entity of the failed run stops for good
        h.Generators.FishForMessage(m => m is StopEntity { EntityId: var g } && g == EntityId.Generator("run-f"), Long);
        h.Teachers.FishForMessage(m => m is StopEntity { EntityId: var t } && t == EntityId.Teacher("run-f"), Long);
        h.Students.FishForMessage(m => m is StopEntity { EntityId: var st } && st == EntityId.Student("run-f", 0), Long);
        // a student that finishes afterwards does not turn it into a completed run
        coordinator.Tell(new StudentFinished("run-f", EntityId.Student("run-f", 0), 91, 92, 12, "", 0));
        coordinator.Tell(new GetRunStatus("run-f"), client);
        Assert.Equal(RunState.Failed, Assert.Single(client.ExpectMsg<RunStatusReport>(Long).Runs).State);
        Assert.False(File.Exists(Path.Combine(h.Options.RunsDir, "run-f", "result.json")));
    }

    /// <summary>An entity's news (the teacher loaded, the student resumed) is the run's status until it is old: the teacher's once the student trains, the student's at its next evaluation.</summary>
    [Fact]
    public void Should_show_an_entitys_news_until_it_is_old()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "news");
        var client = h.Kit.CreateTestProbe();
        var coordinator = h.Sys.ActorOf(RunCoordinator.GetProps(h.Services));
        coordinator.Tell(new SubmitRun(ActorHarness.Spec("n"), "n.yaml", "run-n"), client);
        client.ExpectMsg<RunAccepted>(Long);
        string? Shown(EntityProgress p)
        {
            coordinator.Tell(p);
            coordinator.Tell(new GetRunStatus("run-n"), client);
            return Assert.Single(client.ExpectMsg<RunStatusReport>(Long).Runs).Message;
        }
        var student = EntityId.Student("run-n", 0);
        Assert.Equal("resumed at step 1000", Shown(new EntityProgress("run-n", EntityId.Teacher("run-n"), 0, 0, 0, 0, null, "n1", "resumed at step 1000")));
        Assert.Null(Shown(new EntityProgress("run-n", student, 1, 12, 0, 0, null, "n1", null)));
        Assert.Equal("resumed at step 4 from its checkpoint", Shown(new EntityProgress("run-n", student, 4, 12, 0, 0, null, "n1", "resumed at step 4 from its checkpoint")));
        Assert.Equal("resumed at step 4 from its checkpoint", Shown(new EntityProgress("run-n", student, 5, 12, 0, 0, null, "n1", null)));
        Assert.Null(Shown(new EntityProgress("run-n", student, 6, 12, 0, 0, 91.5, "n1", null)));
        Assert.Contains("resumed at step 1000", File.ReadAllText(Path.Combine(h.Options.RunsDir, "run-n", "events.log")));
    }

    [Fact]
    public void Should_cancel_a_run_for_good_across_a_restart()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "cancel");
        var client = h.Kit.CreateTestProbe();
        var coordinator = h.Sys.ActorOf(RunCoordinator.GetProps(h.Services));
        coordinator.Tell(new SubmitRun(ActorHarness.Spec("c"), "c.yaml", "run-c"), client);
        client.ExpectMsg<RunAccepted>(Long);
        // the run's length is known from its spec before any entity reports
        coordinator.Tell(new GetRunStatus("run-c"), client);
        Assert.Equal(12, Assert.Single(client.ExpectMsg<RunStatusReport>(Long).Runs).TotalSteps);
        // how far it got, as its student and source reported it
        coordinator.Tell(new EntityProgress("run-c", EntityId.Student("run-c", 0), 7, 12, 2, 0, 55.5, "node-s", null));
        coordinator.Tell(new EntityProgress("run-c", EntityId.Generator("run-c"), 9, 12, 3, 4, null, "node-g", null));
        coordinator.Tell(new CancelRun("run-c", "changed my mind"), client);
        Assert.Equal(new CancelAnswer("run-c", RunState.Cancelled, false), client.ExpectMsg<CancelAnswer>(Long));
        h.Students.FishForMessage(m => m is StopEntity, Long);
        h.Stop(coordinator);
        h.Teachers.ReceiveWhile(TimeSpan.FromMilliseconds(200), m => m);
        var again = h.Sys.ActorOf(RunCoordinator.GetProps(h.Services));
        again.Tell(new GetRunStatus("run-c"), client);
        var status = Assert.Single(client.ExpectMsg<RunStatusReport>(Long).Runs);
        Assert.Equal(RunState.Cancelled, status.State);
        Assert.Contains("changed my mind", status.Message);
        // the restarted coordinator shows where the run ended (its entities report no more), and no queues
        Assert.Equal((7L, 55.5, "node-s", "node-g", 9L), (status.StudentStep, status.StudentAccuracy, status.Node, status.GeneratorNode, status.GeneratedBatches));
        Assert.Equal((0, 0, 0), (status.PoolBatches, status.GeneratorQueue, status.StudentInFlight));
        // a recovered coordinator does not start a cancelled run's entities again
        h.Teachers.ExpectNoMsg(TimeSpan.FromSeconds(2));
        Assert.Contains("cancelled: changed my mind", File.ReadAllText(Path.Combine(h.Options.RunsDir, "run-c", "events.log")));
    }

    /// <summary>
    /// A journal write that fails stops a persistent actor (Akka.Persistence); the coordinator as
    /// the cluster runs it comes back with backoff and answers meanwhile, instead of going silent
    /// for good (seen: stop PostgreSQL, submit, start it again: status and submit timed out
    /// forever). Here the real PostgreSQL journal's table goes away and comes back, so that every
    /// write and every recovery fails at once, as against a stopped server.
    /// </summary>
    [Fact]
    public void Should_answer_while_its_journal_is_unavailable_and_take_runs_again_once_it_is_back()
    {
        using var h = new ActorHarness(ActorHarness.Postgres, "coordjournal");
        var client = h.Kit.CreateTestProbe();
        var coordinator = h.Sys.ActorOf(RunCoordinator.GetSupervisedProps(h.Services));
        coordinator.Tell(new GetRunStatus(null), client);
        Assert.Empty(client.ExpectMsg<RunStatusReport>(Long).Runs);
        void Sql(string text)
        {
            using var c = new Npgsql.NpgsqlConnection(h.Options.Persistence.ConnectionString);
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = text;
            cmd.ExecuteNonQuery();
        }
        var spec = ActorHarness.Spec("journal");
        Sql("ALTER TABLE journal RENAME TO journal_away");
        coordinator.Tell(new SubmitRun(spec, "journal.yaml", "run-j"), client);
        Assert.Contains("journal is unavailable", client.ExpectMsg<RunRejected>(Long).Reason);
        // down and retrying with backoff: questions are answered with the reason (one sent just as
        // the coordinator stops or starts again may go unanswered: the client asks again)
        var deadline = DateTime.UtcNow.AddSeconds(30);
        object? answer;
        do
        {
            coordinator.Tell(new GetRunStatus(null), client);
            answer = client.ReceiveOne(TimeSpan.FromSeconds(2));
        } while (answer is not RunRejected && DateTime.UtcNow < deadline);
        Assert.Equal(RunCoordinator.JournalUnavailable, Assert.IsType<RunRejected>(answer).Reason);
        client.ReceiveWhile(TimeSpan.FromSeconds(2), m => m);   // late answers to the questions before
        Sql("ALTER TABLE journal_away RENAME TO journal");
        // the journal is back: the coordinator starts again and takes the same submission
        deadline = DateTime.UtcNow.AddSeconds(90);
        IRunCommand? reply = null;
        while (reply is not RunAccepted && DateTime.UtcNow < deadline)
        {
            coordinator.Tell(new SubmitRun(spec, "journal.yaml", "run-j"), client);
            reply = client.ReceiveOne(TimeSpan.FromSeconds(5)) as IRunCommand;
            if (reply is RunRejected) Thread.Sleep(500);
        }
        Assert.IsType<RunAccepted>(reply);
        coordinator.Tell(new GetRunStatus("run-j"), client);
        Assert.Equal("run-j", Assert.Single(client.ExpectMsg<RunStatusReport>(Long).Runs).RunId);
        h.Teachers.FishForMessage(m => m is StartEntity, Long);
    }
}
