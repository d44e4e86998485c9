using System.Globalization;
using Akka.Actor;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Serialization;
using Cluster.Node.Actors;

namespace Cluster.Tests.Cluster;

/// <summary>
/// Metrics rows and sample grids are delivered at least once and written once: the entity journals
/// each before sending it and holds it until the coordinator acknowledges it; the coordinator writes
/// each report in order, once, across its own restarts (<see cref="ReportLedger"/>).
/// </summary>
public sealed class ReportDeliveryTests
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(30);

    private static ReportQueued Row(long seq, long step) =>
        new(new RunMetrics("r", "r/student/0", step, ["loss"], [step / 10.0], new ReportHeader(seq, 0, 1000 + seq)), null);

    private static ReportQueued Grid(long seq) =>
        new(null, new RunSamples("r", "r/generator/0", seq, [0x89, (byte)seq], new ReportHeader(seq, 0, 1000 + seq)));

    [Fact]
    public void Should_hold_reports_until_acknowledged_give_up_only_the_oldest_of_a_kind_and_keep_them_in_its_snapshot()
    {
        var s = EntityState.Empty;
        for (var seq = 1; seq <= 4; seq++) s = s.Apply(Row(seq, seq * 25));
        Assert.Equal([1L, 2, 3, 4], s.Outbox.Keys);
        Assert.Equal(4, s.LastReport);
        Assert.Equal(2, s.HeldBefore(3));
        Assert.Equal(0, s.HeldBefore(1));

        // an acknowledgement lets go of everything up to it, and only that; an old one changes nothing
        s = s.Acknowledge(2);
        Assert.Equal([3L, 4], s.Outbox.Keys);
        Assert.Equal(0, s.HeldBefore(3));   // what came before 3 is the coordinator's now
        Assert.Equal([3L, 4], s.Acknowledge(1).Outbox.Keys);

        // a coordinator that does not answer: the oldest rows are given up beyond the bound, grids on their own bound
        var full = EntityState.Empty;
        long n = 0;
        for (var i = 0; i < EntityState.MaxHeldRows + 3; i++) full = full.Apply(Row(++n, i));
        var firstGrid = n + 1;
        for (var i = 0; i < EntityState.MaxHeldGrids + 2; i++) full = full.Apply(Grid(++n));
        Assert.Equal(EntityState.MaxHeldRows, full.Outbox.Values.Count(r => r.Metrics is not null));
        Assert.Equal(EntityState.MaxHeldGrids, full.Outbox.Values.Count(r => r.Samples is not null));
        Assert.Equal(4, full.Outbox.Keys.First());   // rows 1-3 given up
        Assert.DoesNotContain(firstGrid, full.Outbox.Keys);
        Assert.DoesNotContain(firstGrid + 1, full.Outbox.Keys);
        Assert.Contains(firstGrid + 2, full.Outbox.Keys);
        // the report after the given-up grids says the last row is the one before it: the coordinator can take it
        Assert.Equal(firstGrid - 1, full.HeldBefore(firstGrid + 2));

        // the snapshot keeps what is held and the numbering, through the wire codec
        var snapshot = s.ToSnapshot();
        var back = EntityState.FromSnapshot((EntitySnapshot)ContractCodec.Deserialize(ContractCodec.Serialize(snapshot), ContractCodec.Manifest(snapshot)));
        Assert.Equal([3L, 4], back.Outbox.Keys);
        Assert.Equal(4, back.LastReport);
        Assert.Equal([7.5], back.Outbox[3].Metrics!.Values);
        Assert.Equal(75, back.Outbox[3].Metrics!.Step);
        // a snapshot from before reports were numbered holds none
        var old = EntityState.FromSnapshot(new EntitySnapshot("r", "y", null, [], 0, [], false));
        Assert.Empty(old.Outbox);
        Assert.Equal(0, old.LastReport);
    }

    [Fact]
    public void Should_write_each_report_once_in_order_across_a_restart_and_take_a_gap_its_entity_gave_up()
    {
        var dir = Path.Combine(Path.GetTempPath(), "ledger-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var ledger = ReportLedger.Open(dir, out var problem);
            Assert.Null(problem);
            const string e = "r/student/0";
            Assert.Equal(ReportLedger.Verdict.Write, ledger.Judge(e, new ReportHeader(1, 0, 0)));
            ledger.Wrote(e, 1);
            Assert.Equal(ReportLedger.Verdict.Known, ledger.Judge(e, new ReportHeader(1, 0, 0)));
            // 2 never came (sent while the coordinator was away) and the entity still holds it: wait for it
            Assert.Equal(ReportLedger.Verdict.Missing, ledger.Judge(e, new ReportHeader(3, 2, 0)));
            // the entity gave 2 up (its bound), so 3's previous held report is 1: take 3
            Assert.Equal(ReportLedger.Verdict.Write, ledger.Judge(e, new ReportHeader(3, 1, 0)));
            ledger.Wrote(e, 3);
            // another entity has its own numbering; unnumbered reports are written as they come
            Assert.Equal(ReportLedger.Verdict.Write, ledger.Judge("r/generator/0", new ReportHeader(1, 0, 0)));
            Assert.Equal(ReportLedger.Verdict.Write, ledger.Judge(e, null));

            // a coordinator that starts again reads what its files have
            var again = ReportLedger.Open(dir, out problem);
            Assert.Null(problem);
            Assert.Equal(3, again.WrittenUpTo(e));
            Assert.Equal(ReportLedger.Verdict.Known, again.Judge(e, new ReportHeader(2, 1, 0)));
            Assert.Equal(ReportLedger.Verdict.Write, again.Judge(e, new ReportHeader(4, 3, 0)));

            // a damaged ledger is said, and taken as empty: rows may be written twice, none is lost
            File.WriteAllText(Path.Combine(dir, ReportLedger.FileName), "{\"r/student/0\": ");
            var damaged = ReportLedger.Open(dir, out problem);
            Assert.Contains(ReportLedger.FileName, problem);
            Assert.Equal(0, damaged.WrittenUpTo(e));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>
    /// The coordinator writes a report once, asks for the ones it misses, keeps each row's own time,
    /// knows after a restart what its files have, and writes a row held past the run's end.
    /// </summary>
    [Fact]
    public void Should_acknowledge_reports_ask_for_missing_ones_and_write_each_once_across_its_restart()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "ledger");
        var client = h.Kit.CreateTestProbe();
        var entity = h.Kit.CreateTestProbe();
        var coordinator = h.Sys.ActorOf(RunCoordinator.GetProps(h.Services));
        coordinator.Tell(new SubmitRun(ActorHarness.Spec("l"), "l.yaml", "run-l"), client);
        client.ExpectMsg<RunAccepted>(Long);
        var student = EntityId.Student("run-l", 0);
        RunMetrics Row(long seq, long previous, long step, double age = 0) =>
            new("run-l", student, step, ["loss"], [step / 100.0], new ReportHeader(seq, previous, 0, age));
        ReportsReceived Ack() => entity.ExpectMsg<ReportsReceived>(Long);

        coordinator.Tell(Row(1, 0, 10), entity.Ref);
        Assert.Equal(new ReportsReceived("run-l", student, 1), Ack());
        coordinator.Tell(Row(1, 0, 10), entity.Ref);   // sent again: known
        Assert.Equal(new ReportsReceived("run-l", student, 1), Ack());
        coordinator.Tell(Row(3, 2, 30), entity.Ref);   // 2 is missing: ask for it
        Assert.Equal(new ReportsReceived("run-l", student, 1, Missing: true), Ack());
        Thread.Sleep(2500);
        coordinator.Tell(Row(2, 1, 20, age: 2.0), entity.Ref);
        Assert.Equal(2, Ack().UpToSeq);
        coordinator.Tell(Row(3, 2, 30), entity.Ref);
        Assert.Equal(3, Ack().UpToSeq);
        var samples = new RunSamples("run-l", EntityId.Generator("run-l"), 40, [0x89, 0x50], new ReportHeader(1, 0, 0));
        coordinator.Tell(samples, entity.Ref);
        Assert.Equal(new ReportsReceived("run-l", EntityId.Generator("run-l"), 1), Ack());
        coordinator.Tell(samples, entity.Ref);
        Assert.Equal(new ReportsReceived("run-l", EntityId.Generator("run-l"), 1), Ack());

        h.Stop(coordinator);
        var again = h.Sys.ActorOf(RunCoordinator.GetProps(h.Services));
        again.Tell(Row(3, 2, 30), entity.Ref);   // its ack was lost with the old coordinator: known, not written twice
        Assert.Equal(3, Ack().UpToSeq);
        again.Tell(Row(5, 3, 50), entity.Ref);   // the entity gave 4 up
        Assert.Equal(5, Ack().UpToSeq);

        // the run ends; a row its entity still held comes after the end and is written all the same
        again.Tell(new TeacherReady("run-l", new string('a', 64), 97.5, 1, false));
        again.Tell(new StudentFinished("run-l", student, 91, 92, 12, "", 0));
        var dir = Path.Combine(h.Options.RunsDir, "run-l");
        h.Kit.AwaitAssert(() => Assert.True(File.Exists(Path.Combine(dir, "result.json"))), Long);
        again.Tell(Row(6, 5, 60), entity.Ref);
        Assert.Equal(6, Ack().UpToSeq);

        var lines = File.ReadAllLines(Path.Combine(dir, "metrics.csv")).Skip(1).Select(l => l.Split(',')).ToList();
        Assert.Equal(["10", "20", "30", "50", "60"], lines.Where(c => c[0] == "student-0").Select(c => c[1]));
        // row 2 was made 2 s before it came, just before row 3: its time is when it was made, not when it arrived
        var seconds = lines.ToDictionary(c => c[1], c => double.Parse(c[2], CultureInfo.InvariantCulture));
        Assert.True(seconds["30"] - seconds["20"] >= 1.95, $"row 20 at {seconds["20"]} s, row 30 at {seconds["30"]} s");
        Assert.True(seconds["10"] <= seconds["20"] && seconds["30"] <= seconds["50"], string.Join(", ", seconds.Select(x => $"{x.Key}: {x.Value} s")));
        Assert.Single(Directory.GetFiles(Path.Combine(dir, "samples")));
    }

    /// <summary>
    /// A disk that refuses the run's files (here: folders where status.json and metrics.csv go)
    /// does not crash the coordinator: its live figures stay, a row it could not write is not
    /// acknowledged, and once the file can be written the row sent again is written.
    /// </summary>
    [Fact]
    public void Should_go_on_when_the_runs_files_cannot_be_written_and_write_the_row_sent_again_once_they_can()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "diskfull");
        var client = h.Kit.CreateTestProbe();
        var entity = h.Kit.CreateTestProbe();
        var dir = Path.Combine(h.Options.RunsDir, "run-d");
        Directory.CreateDirectory(Path.Combine(dir, "status.json"));
        Directory.CreateDirectory(Path.Combine(dir, "metrics.csv"));
        var coordinator = h.Sys.ActorOf(RunCoordinator.GetProps(h.Services));
        coordinator.Tell(new SubmitRun(ActorHarness.Spec("d"), "d.yaml", "run-d"), client);
        client.ExpectMsg<RunAccepted>(Long);
        var student = EntityId.Student("run-d", 0);
        // live figures, held in memory only: a coordinator that crashed and started again would have lost them
        coordinator.Tell(new EntityProgress("run-d", student, 7, 12, 1, 0, 55.5, "node-1", null));
        var row = new RunMetrics("run-d", student, 7, ["loss"], [0.7], new ReportHeader(1, 0, 0));
        coordinator.Tell(row, entity.Ref);
        entity.ExpectNoMsg(TimeSpan.FromSeconds(1));
        coordinator.Tell(new GetRunStatus("run-d"), client);
        Assert.Equal(7, Assert.Single(client.ExpectMsg<RunStatusReport>(Long).Runs).StudentStep);

        Directory.Delete(Path.Combine(dir, "metrics.csv"));
        coordinator.Tell(row, entity.Ref);
        Assert.Equal(1, entity.ExpectMsg<ReportsReceived>(Long).UpToSeq);
        Assert.Equal(["7"], File.ReadAllLines(Path.Combine(dir, "metrics.csv")).Skip(1).Select(l => l.Split(',')[1]));
    }

    /// <summary>
    /// A student's rows are numbered, journaled and held until acknowledged: they go again every few
    /// seconds, after the student's restart (the same rows), and at once when the coordinator says it
    /// misses one; once all are acknowledged nothing goes again. Timer resends may come at any point,
    /// so the rows are told apart by their numbers.
    /// </summary>
    [Fact]
    public void Should_send_held_rows_again_periodically_after_a_restart_and_when_the_coordinator_misses_one()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "outbox");
        var run = $"o{Guid.NewGuid():N}"[..12];
        var id = EntityId.Student(run, 0);
        var student = h.Sys.ActorOf(StudentEntity.GetProps(id, h.Services));
        student.Tell(new StartEntity(id, run, ActorHarness.Spec("outbox", checkpointEvery: 2, window: 4), h.TeacherBlob()));
        h.Generators.ExpectMsg<RequestBatches>(Long);
        for (var s = 1; s <= 4; s++) student.Tell(EntityProtocolTests.Batch(id, s));
        RunMetrics NextRow() => (RunMetrics)h.Coordinator.FishForMessage(m => m is RunMetrics, Long);
        var rows = new List<RunMetrics>();
        while (rows.Count == 0 || rows[^1].Step < 4)
            if (NextRow() is var r && r.Report!.Seq > rows.Count) rows.Add(r);
        Assert.Equal(Enumerable.Range(1, rows.Count).Select(i => (long)i), rows.Select(r => r.Report!.Seq));
        Assert.Equal(Enumerable.Range(0, rows.Count).Select(i => (long)i), rows.Select(r => r.Report!.Previous));
        h.Generators.FishForMessage(m => m is ReleaseBatches { UpToSeq: 4 }, Long);
        h.Stop(student);
        h.Coordinator.ReceiveWhile(TimeSpan.FromMilliseconds(300), m => m);

        // back from its journal: every row again, the same ones (acknowledgements are not journaled)
        var back = h.Sys.ActorOf(StudentEntity.GetProps(id, h.Services));
        Dictionary<long, RunMetrics> AllAgain()
        {
            var seen = new Dictionary<long, RunMetrics>();
            while (seen.Count < rows.Count)
            {
                var r = NextRow();
                seen.TryAdd(r.Report!.Seq, r);
            }
            return seen;
        }
        var again = AllAgain();
        Assert.Equal(rows.Select(r => (r.Step, r.Report!.Seq, r.Report.MadeUnixMs, r.Values[0])),
            again.Values.OrderBy(r => r.Report!.Seq).Select(r => (r.Step, r.Report!.Seq, r.Report.MadeUnixMs, r.Values[0])));
        // unacknowledged, they go again with the periodic resend
        var clock = System.Diagnostics.Stopwatch.StartNew();
        AllAgain();
        Assert.True(clock.Elapsed > TimeSpan.FromSeconds(2), $"held rows came again after {clock.Elapsed.TotalSeconds:F1} s, before the resend interval");

        // the coordinator has the first and misses the second: what is held goes again at once, from the second on
        clock.Restart();
        back.Tell(new ReportsReceived(run, id, 1, Missing: true), h.Coordinator.Ref);
        var resent = NextRow();
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(3), $"the rows a coordinator misses came {clock.Elapsed.TotalSeconds:F1} s after it said so");
        Assert.Equal((2L, 0L), (resent.Report!.Seq, resent.Report.Previous));
        Assert.True(resent.Report.AgeSeconds > 0);

        // all acknowledged: nothing goes again, past twice the resend interval
        back.Tell(new ReportsReceived(run, id, rows[^1].Report!.Seq), h.Coordinator.Ref);
        back.Tell(new GetEntityStatus(id), h.Kit.TestActor);
        h.Kit.ExpectMsg<EntityStatus>(Long);
        h.Coordinator.ReceiveWhile(TimeSpan.FromMilliseconds(500), m => m);
        var late = h.Coordinator.ReceiveWhile(TimeSpan.FromSeconds(11), m => m).OfType<RunMetrics>().ToList();
        Assert.Empty(late);
    }
}
