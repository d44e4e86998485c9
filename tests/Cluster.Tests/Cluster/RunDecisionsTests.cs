using Cluster.Contracts.Events;
using Cluster.Contracts.Runs;
using Cluster.Node.Actors;
using Distill.Engine.Runs;
using Distill.Engine.Specs;

namespace Cluster.Tests.Cluster;

/// <summary>The run coordinator's decisions, without an actor: state and command in, events and answer out.</summary>
public sealed class RunDecisionsTests
{
    private static readonly DateTime Now = new(2026, 12, 1, 20, 0, 0, DateTimeKind.Utc);
    private static readonly string Yaml = ActorHarness.Spec("d");

    private static (CoordinatorState State, string RunId) Submitted(CoordinatorState? s = null)
    {
        s ??= CoordinatorState.Empty;
        var d = RunDecisions.Submit(s, new SubmitRun(Yaml, "d.yaml", null), () => SpecParser.Parse(Yaml, "d.yaml"), Now);
        var e = Assert.IsType<RunSubmitted>(d.Event);
        Assert.Equal(e.RunId, Assert.IsType<RunAccepted>(d.Reply).RunId);
        return (s.Apply(e), e.RunId);
    }

    private static CoordinatorState Apply(CoordinatorState s, RunDecisions.Decision d) => d.Event is { } e ? s.Apply(e) : s;

    [Fact]
    public void Should_keep_a_failed_run_failed_when_the_student_reports_finished_later()
    {
        var (s, id) = Submitted();
        s = Apply(s, RunDecisions.EntityFailed(s, new EntityFailed(id, $"{id}/generator/0", "loss is NaN")));
        Assert.Equal(RunState.Failed, RunDecisions.StateOf(s.Runs[id]));
        Assert.Equal(RunDecisions.Decision.Nothing, RunDecisions.StudentFinished(s, new StudentFinished(id, $"{id}/student/0", 90, 91, 10, "", 0), Now));
        Assert.Equal(RunDecisions.Decision.Nothing, RunDecisions.EntityFailed(s, new EntityFailed(id, $"{id}/student/0", "again")));
        Assert.Equal(RunDecisions.Decision.Nothing, RunDecisions.TeacherReady(s, new TeacherReady(id, new string('a', 64), 98)));
        Assert.Equal($"{id}/generator/0: loss is NaN", s.Runs[id].Message);
        Assert.Empty(s.Active);
    }

    [Fact]
    public void Should_cancel_a_running_run_for_good_and_say_how_an_ended_one_ended()
    {
        var (s, id) = Submitted();
        var d = RunDecisions.Cancel(s, new CancelRun(id, "by test"), Now);
        Assert.IsType<RunCancelled>(d.Event);
        Assert.Equal(new CancelAnswer(id, RunState.Cancelled, false), d.Reply);
        s = Apply(s, d);
        Assert.Equal(RunState.Cancelled, RunDecisions.StateOf(s.Runs[id]));
        Assert.Empty(s.Active);
        Assert.Equal(RunDecisions.Decision.Nothing, RunDecisions.StudentFinished(s, new StudentFinished(id, $"{id}/student/0", 90, 91, 10, "", 0), Now));
        Assert.Equal(new CancelAnswer(id, RunState.Cancelled, true), RunDecisions.Cancel(s, new CancelRun(id, "again"), Now).Reply);
        // a snapshot keeps it cancelled
        Assert.Equal(RunState.Cancelled, RunDecisions.StateOf(CoordinatorState.FromSnapshot(s.ToSnapshot()).Runs[id]));

        var (s2, done) = Submitted(s);
        s2 = Apply(s2, RunDecisions.StudentFinished(s2, new StudentFinished(done, $"{done}/student/0", 90, 91, 10, "", 0), Now));
        var late = RunDecisions.Cancel(s2, new CancelRun(done, "late"), Now);
        Assert.Null(late.Event);
        Assert.Equal(new CancelAnswer(done, RunState.Completed, true), late.Reply);
        Assert.IsType<RunRejected>(RunDecisions.Cancel(s2, new CancelRun("nope", "x"), Now).Reply);

        // a reason with line breaks is kept on one line, as every event is
        var (s3, third) = Submitted(s2);
        var broken = Assert.IsType<RunCancelled>(RunDecisions.Cancel(s3, new CancelRun(third, "50% done\nrolled back\r\tat step 3"), Now).Event);
        Assert.Equal("50% done\\nrolled back\\r\\tat step 3", broken.Reason);
    }

    /// <summary>An event is one line of events.log whatever its text holds: a line break in it cannot add an event of its own.</summary>
    [Fact]
    public void Should_write_each_event_on_one_line()
    {
        var path = Path.Combine(Path.GetTempPath(), $"cd-events-{Guid.NewGuid():N}");
        try
        {
            using (var dir = new Distill.Engine.Runs.RunDirectory(path))
            {
                dir.Event("cancelled: first\nrun r1 resumed at step 5\u0007");
                dir.Event("plain");
            }
            var lines = File.ReadAllLines(Path.Combine(path, "events.log"));
            Assert.Equal(2, lines.Length);
            Assert.EndsWith(" cancelled: first\\nrun r1 resumed at step 5\\u0007", lines[0]);
            Assert.Equal("plain", Distill.Engine.Runs.RunDirectory.OneLine("plain"));
        }
        finally { Directory.Delete(path, recursive: true); }
    }

    /// <summary>compare_baseline's student alone is a run of its own, recorded in the same event as its run, and ends with it unless that completes.</summary>
    [Fact]
    public void Should_submit_compare_baselines_run_with_its_run_and_cancel_it_with_it()
    {
        var yaml = Yaml + "\ncompare_baseline: true\nbaseline_train: {steps: 7, batch_size: 32, optimizer: sgd, lr: 0.05}\n";
        var spec = SpecParser.Parse(yaml, "d.yaml");
        var d = RunDecisions.Submit(CoordinatorState.Empty, new SubmitRun(yaml, "d.yaml", "r1"), () => spec, Now);
        var e = Assert.IsType<RunSubmitted>(d.Event);
        var s = CoordinatorState.Empty.Apply(e);
        Assert.Equal(["r1", "r1-baseline"], s.Runs.Keys);
        var b = s.Runs["r1-baseline"];
        Assert.Equal("r1", b.BaselineOf);
        Assert.True(b.Queued);
        var bs = SpecParser.Parse(b.SpecYaml, b.SpecFile);
        Assert.Equal("supervised", bs.Method.Name);
        Assert.Equal(spec.Seed + 1, bs.Seed);
        Assert.Equal(7, bs.Student.Train.Steps);
        Assert.Equal("sgd", bs.Student.Train.Optimizer);
        Assert.False(bs.CompareBaseline);
        Assert.False(bs.Guard.Enabled);
        // a snapshot keeps the pair
        Assert.Equal("r1", CoordinatorState.FromSnapshot(s.ToSnapshot()).Runs["r1-baseline"].BaselineOf);

        // its run completing leaves it going; its run cancelled (or failed) cancels it
        Assert.Null(RunDecisions.BaselineEnds(s, "r1", Now));
        var done = Apply(s, RunDecisions.StudentFinished(s, new StudentFinished("r1", "r1/student/0", 90, 91, 10, "", 0), Now));
        Assert.Null(RunDecisions.BaselineEnds(done, "r1", Now));
        var cancelled = Apply(s, RunDecisions.Cancel(s, new CancelRun("r1", "by test"), Now));
        var end = Assert.IsType<RunCancelled>(RunDecisions.BaselineEnds(cancelled, "r1", Now));
        Assert.Equal("r1-baseline", end.RunId);
        Assert.Contains("r1 was cancelled", end.Reason);
        var failed = Apply(s, RunDecisions.EntityFailed(s, new EntityFailed("r1", "r1/student/0", "NaN")));
        Assert.Contains("r1 failed", RunDecisions.BaselineEnds(failed, "r1", Now)!.Reason);
        // the baseline's own end takes nothing with it
        Assert.Null(RunDecisions.BaselineEnds(Apply(s, RunDecisions.Cancel(s, new CancelRun("r1-baseline", "x"), Now)), "r1-baseline", Now));

        // the id it needs must be free; a sweep's trial has none; a generated id skips taken ones
        var taken = CoordinatorState.Empty.Apply(new RunSubmitted("r2-baseline", Yaml, "d.yaml", Now));
        Assert.Contains("r2-baseline", Assert.IsType<RunRejected>(RunDecisions.Submit(taken, new SubmitRun(yaml, "d.yaml", "r2"), () => spec, Now).Reply).Reason);
        Assert.Contains("too long", Assert.IsType<RunRejected>(RunDecisions.Submit(CoordinatorState.Empty, new SubmitRun(yaml, "d.yaml", new string('x', 115)), () => spec, Now).Reply).Reason);
        Assert.Null(Assert.IsType<RunSubmitted>(RunDecisions.Submit(CoordinatorState.Empty, new SubmitRun(yaml, "d.yaml", "t1", SweepId: "sw"), () => spec, Now).Event).BaselineYaml);
        string? firstBaseline = null;
        var gen = Assert.IsType<RunSubmitted>(RunDecisions.Submit(CoordinatorState.Empty, new SubmitRun(yaml, "d.yaml", null), () => spec, Now,
            id => id.EndsWith("-baseline") && (firstBaseline ??= id) == id ? "a student checkpoint" : null).Event);
        Assert.NotNull(gen.BaselineYaml);
        Assert.NotEqual(firstBaseline, RunIds.Baseline(gen.RunId));
        Assert.Null(Assert.IsType<RunSubmitted>(RunDecisions.Submit(CoordinatorState.Empty, new SubmitRun(Yaml, "d.yaml", "r3"), () => SpecParser.Parse(Yaml, "d.yaml"), Now).Event).BaselineYaml);
    }

    [Fact]
    public void Should_give_two_submissions_of_one_spec_in_one_second_two_run_ids()
    {
        var (s, first) = Submitted();
        var (s2, second) = Submitted(s);
        Assert.NotEqual(first, second);
        Assert.Equal(2, s2.Runs.Count);
        // an explicit id with the same spec is the same run (it resumes); with another spec, refused
        var again = RunDecisions.Submit(s2, new SubmitRun(Yaml, "d.yaml", first), () => SpecParser.Parse(Yaml, "d.yaml"), Now);
        Assert.Equal(new RunAccepted(first, true), again.Reply);
        Assert.Null(again.Event);
        var other = ActorHarness.Spec("d", steps: 99);
        Assert.Contains("different spec", Assert.IsType<RunRejected>(RunDecisions.Submit(s2, new SubmitRun(other, "d.yaml", first), () => SpecParser.Parse(other, "d.yaml"), Now).Reply).Reason);
    }

    [Fact]
    public void Should_refuse_a_bad_spec_or_run_id_with_the_reason()
    {
        var bad = RunDecisions.Submit(CoordinatorState.Empty, new SubmitRun("name: x\nmethod: dafl\nbogus: 1\n", "bad.yaml", null),
            () => SpecParser.Parse("name: x\nmethod: dafl\nbogus: 1\n", "bad.yaml"), Now);
        Assert.Contains("bad.yaml", Assert.IsType<RunRejected>(bad.Reply).Reason);
        var id = RunDecisions.Submit(CoordinatorState.Empty, new SubmitRun(Yaml, "d.yaml", "a/b"), () => SpecParser.Parse(Yaml, "d.yaml"), Now);
        Assert.Contains("run id 'a/b'", Assert.IsType<RunRejected>(id.Reply).Reason);
    }

    [Fact]
    public void Should_refuse_a_run_unknown_to_the_journal_whose_directory_holds_work_and_not_pick_such_an_id()
    {
        var root = Path.Combine(Path.GetTempPath(), $"cd-prior-{Guid.NewGuid():N}");
        try
        {
            var dir = Path.Combine(root, "r1");
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "submitted.yaml"), Yaml);
            File.WriteAllText(Path.Combine(dir, "metrics.csv"), "phase,step,seconds,loss\n");
            Func<string, string?> prior = id => RunDirectory.PriorWork(Path.Combine(root, id));
            // a spec and a header only: nothing trained yet, so the run is taken
            Assert.IsType<RunAccepted>(RunDecisions.Submit(CoordinatorState.Empty, new SubmitRun(Yaml, "d.yaml", "r1"), () => SpecParser.Parse(Yaml, "d.yaml"), Now, prior).Reply);
            File.AppendAllText(Path.Combine(dir, "metrics.csv"), "student,20,1.5,0.3\nstudent,40,3.1,0.2\n");
            File.WriteAllText(Path.Combine(dir, "result.json"), "{}");
            var refused = RunDecisions.Submit(CoordinatorState.Empty, new SubmitRun(Yaml, "d.yaml", "r1"), () => SpecParser.Parse(Yaml, "d.yaml"), Now, prior);
            Assert.Null(refused.Event);
            var reason = Assert.IsType<RunRejected>(refused.Reply).Reason;
            Assert.Contains("metrics.csv with 2 rows, result.json", reason);
            Assert.Contains("this journal has no record of the run", reason);
            // a run the journal knows resumes, whatever its directory holds
            var (s, id) = Submitted();
            Assert.Equal(new RunAccepted(id, true), RunDecisions.Submit(s, new SubmitRun(Yaml, "d.yaml", id), () => SpecParser.Parse(Yaml, "d.yaml"), Now, _ => "metrics.csv with 9 rows").Reply);
            // a chosen id skips directories that hold work
            var asked = new List<string>();
            var fresh = RunDecisions.Submit(CoordinatorState.Empty, new SubmitRun(Yaml, "d.yaml", null), () => SpecParser.Parse(Yaml, "d.yaml"), Now,
                x => { asked.Add(x); return asked.Count == 1 ? "result.json" : null; });
            Assert.Equal(2, asked.Count);
            Assert.Equal(asked[1], Assert.IsType<RunAccepted>(fresh.Reply).RunId);
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [Fact]
    public void A_run_paused_at_its_hold_step_gives_up_its_slot_and_takes_one_again_when_it_goes_on()
    {
        var s = CoordinatorState.Empty;
        foreach (var (id, hold, at) in new[] { ("p", (long?)47, 0), ("q", null, 1) })
            s = s.Apply(Assert.IsType<RunSubmitted>(RunDecisions.Submit(s, new SubmitRun(Yaml, "d.yaml", id, "sw", hold), () => SpecParser.Parse(Yaml, "d.yaml"), Now.AddSeconds(at)).Event));
        Assert.Equal(47, s.Runs["p"].HoldAt);
        s = RunDecisions.Admit(s, 1, Now).Aggregate(s, (x, a) => x.Apply(a));
        Assert.True(s.Runs["q"].Queued);
        // a report of another step, or from a run not at its hold, changes nothing
        Assert.Null(RunDecisions.Held(s, new StudentHeld("p", "student/p/0", 40, 50)).Event);
        Assert.Null(RunDecisions.Held(s, new StudentHeld("q", "student/q/0", 47, 50)).Event);
        s = s.Apply(RunDecisions.Held(s, new StudentHeld("p", "student/p/0", 47, 50)).Event!);
        Assert.Equal(RunState.Paused, RunDecisions.StateOf(s.Runs["p"]));
        Assert.Null(RunDecisions.Held(s, new StudentHeld("p", "student/p/0", 47, 50)).Event);   // once
        // its slot goes to the queued run
        Assert.Equal(["q"], RunDecisions.Admit(s, 1, Now).Select(a => a.RunId));
        s = RunDecisions.Admit(s, 1, Now).Aggregate(s, (x, a) => x.Apply(a));
        // promoted: it queues for a slot with its next hold; a resume to a step it passed is refused
        Assert.Null(RunDecisions.Resume(s, new ResumeRun("p", 40)).Event);
        s = s.Apply(RunDecisions.Resume(s, new ResumeRun("p", 188)).Event!);
        Assert.Equal((RunState.Queued, 188L), (RunDecisions.StateOf(s.Runs["p"]), s.Runs["p"].HoldAt!.Value));
        Assert.Empty(RunDecisions.Admit(s, 1, Now));
        Assert.Null(RunDecisions.Resume(s, new ResumeRun("p", 188)).Event);   // idempotent
        s = s.Apply(new RunCompleted("q", 90, 90, 100, "", Now));
        Assert.Equal(["p"], RunDecisions.Admit(s, 1, Now).Select(a => a.RunId));
    }

    [Fact]
    public void Should_admit_queued_runs_oldest_first_into_the_free_slots_and_keep_the_rest_queued()
    {
        var s = CoordinatorState.Empty;
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            var d = RunDecisions.Submit(s, new SubmitRun(Yaml, "d.yaml", $"q{i}"), () => SpecParser.Parse(Yaml, "d.yaml"), Now.AddSeconds(i));
            var e = Assert.IsType<RunSubmitted>(d.Event);
            Assert.True(e.Queued);
            s = s.Apply(e);
            ids.Add(e.RunId);
        }
        Assert.All(ids, id => Assert.Equal(RunState.Queued, RunDecisions.StateOf(s.Runs[id])));
        // no GPU node up: nothing is admitted
        Assert.Empty(RunDecisions.Admit(s, 0, Now));
        // two slots: the two oldest
        var admitted = RunDecisions.Admit(s, 2, Now);
        Assert.Equal(["q0", "q1"], admitted.Select(a => a.RunId));
        s = admitted.Aggregate(s, (x, a) => x.Apply(a));
        Assert.Equal(RunState.PreparingTeacher, RunDecisions.StateOf(s.Runs["q0"]));
        Assert.Empty(RunDecisions.Admit(s, 2, Now));
        Assert.Equal("queued: 1 of 1 waiting for a slot (2 of 2 slots busy)", RunDecisions.QueuedMessage(s, s.Runs["q2"], 2));
        // one ends: its slot goes to the next
        s = s.Apply(new RunCancelled("q0", "by user", Now));
        Assert.Equal(["q2"], RunDecisions.Admit(s, 2, Now).Select(a => a.RunId));
        // a node lost (one slot left) takes no slot from a run admitted before
        Assert.Empty(RunDecisions.Admit(s, 1, Now));
        // outside a cluster there is no limit
        Assert.Equal(["q2"], RunDecisions.Admit(s, null, Now).Select(a => a.RunId));
        // a journal from before admission control: its runs started at once
        Assert.False(CoordinatorState.Empty.Apply(new RunSubmitted("old", Yaml, "d.yaml", Now)).Runs["old"].Queued);
    }
    /// <summary>A run with no node to host it says so; a node that left lately (frozen, then downed) is named, since it joins again by itself.</summary>
    [Fact]
    public void Should_name_a_node_that_left_lately_in_a_waiting_runs_status()
    {
        var spec = SpecParser.Parse(Yaml, "d.yaml");
        Assert.Null(RunDecisions.Waiting(spec, new HashSet<string> { "generator", "teacher", "student" }));
        var none = new HashSet<string>();
        Assert.Equal("waiting: no node that is up hosts generator, teacher, student; start a GPU node (Cluster.GpuNode join --seeds ...)", RunDecisions.Waiting(spec, none));
        Assert.Equal("waiting: no node that is up hosts generator, teacher, student; start a GPU node (Cluster.GpuNode join --seeds ...)",
            RunDecisions.Waiting(spec, none, new Dictionary<string, TimeSpan>()));
        var left = new Dictionary<string, TimeSpan> { ["127.0.0.1:4155"] = TimeSpan.FromSeconds(40), ["127.0.0.1:4154"] = TimeSpan.FromSeconds(12.4) };
        Assert.Equal("waiting: no node that is up hosts generator, teacher, student; 127.0.0.1:4154 left 12 s ago, 127.0.0.1:4155 left 40 s ago " +
                     "(a node that left joins again by itself if it still runs); start a GPU node (Cluster.GpuNode join --seeds ...)", RunDecisions.Waiting(spec, none, left));
    }
}

