using Distill.Engine.Pipeline;
using Akka.Actor;
using Cluster.Contracts;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Tensors;
using Cluster.Node.Actors;
using Cluster.Node.Hosting;
using Distill.Engine.Models;
using static TorchSharp.torch;

namespace Cluster.Tests.Cluster;

/// <summary>The generator, teacher and student entities' protocols, against real journals.</summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class EntityProtocolTests(MnistFixture mnist)
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(60);

    [Theory]
    [MemberData(nameof(ActorHarness.Providers), MemberType = typeof(ActorHarness))]
    public void Should_synthesise_only_requested_batches_and_serve_stored_ones_again_after_a_restart(string provider)
    {
        using var h = new ActorHarness(provider, "gen");
        var run = $"g{Guid.NewGuid():N}"[..12];
        var id = EntityId.Generator(run);
        var spec = ActorHarness.Spec("gen", generatorCheckpointEvery: 3);
        var teacher = h.TeacherBlob();
        var gen = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        gen.Tell(new StartEntity(id, run, spec, teacher));
        gen.Tell(new RequestBatches(id, 1, 2, "s/student/0"));
        var first = new Dictionary<long, byte[]>();
        var firstLabels = new Dictionary<long, byte[]>();
        foreach (var seq in new[] { 1L, 2 })
        {
            // a new batch goes straight to the student, labelled from the teacher pass of its own
            // synthesis step: the teacher's softmax on exactly these images
            var m = h.Students.ExpectMsg<LabelledBatch>(Long);
            Assert.Equal(seq, m.Seq);
            Assert.Equal("s/student/0", m.EntityId);
            Assert.Equal(new long[] { 16, 1, 32, 32 }, m.Images.Shape);
            Assert.Equal(new long[] { 16, 10 }, m.SoftLabels!.Shape);
            Assert.True(IsTeachersSoftmax(h, teacher, m.Images, m.SoftLabels), $"batch {seq}: the soft labels are not the teacher's softmax on its images");
            first[seq] = m.Images.Data;
            firstLabels[seq] = m.SoftLabels.Data;
        }
        // backpressure: nothing beyond what was asked for
        h.Students.ExpectNoMsg(TimeSpan.FromSeconds(1));
        h.Teachers.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
        gen.Tell(new RequestBatches(id, 3, 2, "s/student/0"));
        foreach (var seq in new[] { 3L, 4 }) first[seq] = h.Students.ExpectMsg<LabelledBatch>(m => m.Seq == seq, Long).Images.Data;
        h.Stop(gen);

        // a new incarnation (as after a node failure): stored batches come back unchanged, and
        // the next new batch is the one an uninterrupted generator makes (checkpoint at 3 + replay of 4)
        var again = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        again.Tell(new RequestBatches(id, 2, 1, "s/student/1"));
        var re = h.Students.ExpectMsg<LabelledBatch>(Long);
        Assert.Equal(2, re.Seq);
        Assert.Equal("s/student/1", re.EntityId);
        Assert.Equal(first[2], re.Images.Data);
        Assert.Equal(firstLabels[2], re.SoftLabels!.Data);   // the labels it was first sent with, not a second teacher pass
        again.Tell(new RequestBatches(id, 5, 1, "s/student/0"));
        var fifth = h.Students.ExpectMsg<LabelledBatch>(m => m.Seq == 5, Long).Images.Data;
        // the second incarnation, back past its first batch, is a failover on this node's metrics; the first was not
        Assert.Equal(1, global::Cluster.Node.Telemetry.NodeMetrics.Failovers.WithLabels(run, EntityKinds.Generator).Value);

        var refRun = $"r{Guid.NewGuid():N}"[..12];
        var refId = EntityId.Generator(refRun);
        var reference = h.Sys.ActorOf(SourceEntity.GetProps(refId, h.Services));
        reference.Tell(new StartEntity(refId, refRun, spec, teacher));
        reference.Tell(new RequestBatches(refId, 1, 5, "x/student/0"));
        var refBatches = Enumerable.Range(0, 5).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq, m => m.Images.Data);
        Assert.Equal(refBatches[4], first[4]);
        Assert.Equal(refBatches[5], fifth);
    }

    /// <summary>
    /// ADI's generator: round 1 competes with the initial student; a later round waits for the
    /// student's weights from the end of the round before (and ignores weights from another step);
    /// a generator stopped mid-round resumes that round from its checkpoint, competitor included,
    /// and keeps the batch a generator never stopped keeps.
    /// </summary>
    [Fact]
    public void Should_wait_for_the_students_weights_before_an_adi_round_and_resume_a_round_mid_way()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "adi");
        var run = $"a{Guid.NewGuid():N}"[..12];
        var id = EntityId.Generator(run);
        var yaml = """
            name: adi-gen
            method: adi
            seed: 5
            data: {name: mnist, image_size: 32}
            teacher: {arch: resnet20, train: {steps: 1}}
            student: {arch: lenet5-half, train: {optimizer: adam, lr: 0.002}}
            deepinversion: {rounds: 3, batch_size: 8, iterations: 60, student_steps: 4, student_batch: 8, competition_weight: 1}
            cluster: {generator_checkpoint_every: 10}
            """;
        var teacher = h.TeacherBlob(seed: 31, arch: "resnet20");
        var after1 = StudentWeights(h, 41);
        var after2 = StudentWeights(h, 42);
        const string student = "a/student/0";

        var gen = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        gen.Tell(new StartEntity(id, run, yaml, teacher));
        gen.Tell(new RequestBatches(id, 1, 1, student));
        var round1 = h.Students.ExpectMsg<LabelledBatch>(Long);
        Assert.Equal(1, round1.Seq);
        Assert.Equal(3, round1.Temperature);   // the student's KD temperature
        Assert.Equal(new long[] { 8, 1, 32, 32 }, round1.Images.Shape);
        Assert.True(IsTeachersSoftmax(h, teacher, round1.Images, round1.SoftLabels!, "resnet20", 3), "round 1's labels are not the teacher's softmax at T = 3");

        gen.Tell(new RequestBatches(id, 2, 1, student));
        h.Students.ExpectNoMsg(TimeSpan.FromSeconds(2));   // round 2 competes with the student after round 1: not here yet
        gen.Tell(new CompetitorReady(id, 2, 3, after1));   // weights from the wrong step
        h.Students.ExpectNoMsg(TimeSpan.FromSeconds(1));
        gen.Tell(new CompetitorReady(id, 2, 4, after1));
        var round2 = h.Students.ExpectMsg<LabelledBatch>(Long);
        Assert.Equal(2, round2.Seq);

        // round 3, stopped part-way (after a checkpoint at iteration 10, 20, ...)
        gen.Tell(new RequestBatches(id, 3, 1, student));
        gen.Tell(new CompetitorReady(id, 3, 8, after2));
        var probe = h.Kit.CreateTestProbe();
        string? detail = null;
        h.Kit.AwaitCondition(() =>
        {
            detail = Ask(gen, probe).Detail;
            return detail is { } d && d.StartsWith("making batch 3, unit ") && int.Parse(d.Split(' ')[4]) >= 20;
        }, Long, TimeSpan.FromMilliseconds(20));
        h.Stop(gen);
        h.Students.ExpectNoMsg(TimeSpan.FromMilliseconds(200));   // round 3 was not finished

        // a new incarnation: round 2 from the pool, unchanged; round 3 resumes without being sent the weights again
        var again = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        again.Tell(new RequestBatches(id, 2, 2, student));
        var re2 = h.Students.ExpectMsg<LabelledBatch>(Long);
        Assert.Equal(2, re2.Seq);
        Assert.Equal(round2.Images.Data, re2.Images.Data);
        var round3 = h.Students.ExpectMsg<LabelledBatch>(Long);
        Assert.Equal(3, round3.Seq);

        // what round 3 is without any actor, journal or stop: the engine's synthesiser after 2 rounds, against those weights
        var expected = ReferenceRound(h, yaml, teacher, after2, skip: 2);
        Assert.True(expected.SequenceEqual(round3.Images.Data), $"round 3 after a stop at '{detail}' differs from an uninterrupted round 3");
    }

    private byte[] ReferenceRound(ActorHarness h, string yaml, string teacherBlob, string competitorBlob, int skip) => EngineAccess.Compute(() =>
    {
        var spec = Distill.Engine.Specs.SpecParser.Parse(yaml, "reference");
        using var t = EngineAccess.LoadModel("resnet20", mnist.Data, 32, h.Services.Blobs.Get(teacherBlob), CPU);
        using var c = ModelFactory.Create("lenet5-half", 1, 32, 10);
        EngineAccess.LoadInto(c, h.Services.Blobs.Get(competitorBlob));
        using var r = new Distill.Engine.Methods.RoundSynthesizer(t, spec.SettingsOf<Distill.Engine.Methods.DeepInversionSpec>(), mnist.Data.Mean, mnist.Data.Std, CPU, spec.Seed);
        r.SkipTo(skip);
        r.Begin(c);
        while (true)
        {
            var (_, done) = r.Iterate(false);
            if (done is not null) using (done) return TensorWire.ToPayload(done.Images).Data;
        }
    }).GetAwaiter().GetResult();

    private static string StudentWeights(ActorHarness h, int seed) => EngineAccess.Compute(() =>
    {
        manual_seed(seed);
        using var m = ModelFactory.Create("lenet5-half", 1, 32, 10);
        return h.Services.Blobs.Put(EngineAccess.SaveModel(m));
    }).GetAwaiter().GetResult();

    /// <summary>The teacher's softmax on the images, computed apart (on the compute thread, like the entities).</summary>
    private bool IsTeachersSoftmax(ActorHarness h, string teacherBlob, TensorPayload images, TensorPayload labels, string arch = "lenet5", double temperature = 1) => EngineAccess.Compute(() =>
    {
        using var x = TensorWire.ToTensor(images, CPU);
        using var p = TensorWire.ToTensor(labels, CPU);
        using var model = EngineAccess.LoadModel(arch, mnist.Data, 32, h.Services.Blobs.Get(teacherBlob), CPU);
        model.eval();
        using var _ = no_grad();
        using var expected = nn.functional.softmax(model.call(x) / temperature, 1);
        return p.allclose(expected, rtol: 1e-5, atol: 1e-7);
    }).GetAwaiter().GetResult();

    /// <summary>
    /// Group commit: batches a window allows ahead are stored together, after the synthesis of the
    /// next one. They still go out in order, once each, each stored before it is sent; a
    /// generator stopped with batches synthesised but not stored leaves no staged files, and its
    /// next incarnation makes those batches again, bit for bit.
    /// </summary>
    [Fact]
    public void Should_store_batches_in_groups_send_each_once_in_order_and_lose_none_when_stopped_mid_group()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "group");
        var run = $"q{Guid.NewGuid():N}"[..12];
        var id = EntityId.Generator(run);
        // batches of 128 from a width-32 generator: each takes tens of ms, so a group is seen forming
        var spec = ActorHarness.Spec("group", steps: 12, generatorCheckpointEvery: 100, window: 6).Replace("batch_size: 16, generator_width: 8", "batch_size: 128, generator_width: 32");
        var teacher = h.TeacherBlob();
        var gen = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        gen.Tell(new StartEntity(id, run, spec, teacher));
        gen.Tell(new RequestBatches(id, 1, 6, "s/student/0"));
        var got = Enumerable.Range(0, 6).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToList();
        Assert.Equal([1L, 2, 3, 4, 5, 6], got.Select(m => m.Seq));
        h.Students.ExpectNoMsg(TimeSpan.FromMilliseconds(300));
        var probe = h.Kit.CreateTestProbe();
        Assert.Equal(6, Ask(gen, probe).PoolBatches);
        Assert.Empty(Directory.EnumerateFiles(h.Options.StoreDir, "*.tmp", SearchOption.AllDirectories));

        // stopped part-way through the next group (7-10 are stored together once 10 is made):
        // what is synthesised and not stored is neither in the pool nor sent
        gen.Tell(new RequestBatches(id, 7, 4, "s/student/0"));
        EntityStatus status;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        do status = Ask(gen, probe);
        while (status.Detail?.Contains("awaiting storage") != true && clock.Elapsed < Long);
        gen.Tell(PoisonPill.Instance);
        Assert.Contains("awaiting storage", status.Detail);
        Assert.Equal(6, status.PoolBatches);
        probe.Watch(gen);
        probe.ExpectTerminated(gen, Long);
        var before = h.Students.ReceiveWhile(TimeSpan.FromMilliseconds(500), o => o as LabelledBatch).Select(m => m!.Seq).ToList();
        Assert.True(before.Count is 0 or 4, $"batches sent before the stop: {string.Join(",", before)}");
        // staged files of the unstored batches (and of a synthesis still running) are removed after it
        h.Kit.AwaitAssert(() => Assert.Empty(Directory.EnumerateFiles(h.Options.StoreDir, "*.tmp", SearchOption.AllDirectories)), Long);

        var again = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        again.Tell(new RequestBatches(id, 1, 10, "s/student/0"));
        var after = Enumerable.Range(0, 10).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq);
        Assert.Equal(Enumerable.Range(1, 10).Select(i => (long)i), after.Keys.Order());
        foreach (var m in got) Assert.Equal(m.Images.Data, after[m.Seq].Images.Data);

        var refRun = $"r{Guid.NewGuid():N}"[..12];
        var refId = EntityId.Generator(refRun);
        var reference = h.Sys.ActorOf(SourceEntity.GetProps(refId, h.Services));
        reference.Tell(new StartEntity(refId, refRun, spec, teacher));
        reference.Tell(new RequestBatches(refId, 1, 10, "x/student/0"));
        var expected = Enumerable.Range(0, 10).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq);
        foreach (var seq in Enumerable.Range(1, 10).Select(i => (long)i))
        {
            Assert.Equal(expected[seq].Images.Data, after[seq].Images.Data);
            Assert.Equal(expected[seq].SoftLabels!.Data, after[seq].SoftLabels!.Data);
        }
    }

    /// <summary>Written batches (batch_memory_mb 0) lose their blobs on release; held ones never had any and leave memory.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(256)]
    public void Should_drop_released_batches_from_the_pool_only_when_every_replica_released_them(int batchMemoryMb)
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "release");
        var run = $"p{Guid.NewGuid():N}"[..12];
        var id = EntityId.Generator(run);
        var gen = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        gen.Tell(new StartEntity(id, run, ActorHarness.Spec("rel", replicas: 2, batchMemoryMb: batchMemoryMb), h.TeacherBlob()));
        gen.Tell(new RequestBatches(id, 1, 4, "a/student/0"));
        for (var i = 0; i < 4; i++) h.Students.ExpectMsg<LabelledBatch>(Long);
        // batch blobs are the 16x1x32x32 float payloads (64 KiB plus a small header)
        int BatchBlobs() => Directory.EnumerateFiles(h.Options.StoreDir, "*.bin", SearchOption.AllDirectories)
            .Count(f => new FileInfo(f).Length is >= 65_536 and < 65_536 + 64);
        EntityStatus Status() => Ask(gen, h.Kit.CreateTestProbe());
        Assert.Equal(4, Status().PoolBatches);
        Assert.Equal(batchMemoryMb == 0 ? 4 : 0, BatchBlobs());
        if (batchMemoryMb > 0) Assert.Contains("4 held in memory", Status().Detail);
        gen.Tell(new ReleaseBatches(id, EntityId.Student(run, 0), 3));
        Assert.Equal(4, Status().PoolBatches);
        gen.Tell(new ReleaseBatches(id, EntityId.Student(run, 1), 2));
        h.Kit.AwaitAssert(() => Assert.Equal(2, Status().PoolBatches), Long);
        // and their blobs are gone, or their bytes left memory
        Assert.Equal(batchMemoryMb == 0 ? 2 : 0, BatchBlobs());
        if (batchMemoryMb > 0) Assert.Contains("2 held in memory", Status().Detail);
    }

    private static EntityStatus Ask(IActorRef actor, Akka.TestKit.TestProbe probe)
    {
        actor.Tell(new GetEntityStatus("x"), probe);
        return probe.ExpectMsg<EntityStatus>(Long);
    }

    [Fact]
    public void Should_label_batches_with_the_teachers_softmax_and_send_them_to_the_student_that_asked()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "teacher");
        var run = $"t{Guid.NewGuid():N}"[..12];
        var id = EntityId.Teacher(run);
        var blob = h.TeacherBlob(seed: 21);
        var teacher = h.Sys.ActorOf(TeacherEntity.GetProps(id, h.Services));
        teacher.Tell(new StartEntity(id, run, ActorHarness.Spec("teach"), blob));
        manual_seed(2);
        using var images = randn(8, 1, 32, 32);
        var payload = TensorWire.ToPayload(images);
        teacher.Tell(new LabelBatch(id, 7, payload, EntityId.Student(run, 0)));
        var labelled = h.Students.ExpectMsg<LabelledBatch>(Long);
        Assert.Equal(EntityId.Student(run, 0), labelled.EntityId);
        Assert.Equal(7, labelled.Seq);
        Assert.Equal(payload.Data, labelled.Images.Data);
        using var probs = TensorWire.ToTensor(labelled.SoftLabels!, CPU);
        using var model = EngineAccess.LoadModel("lenet5", mnist.Data, 32, h.Services.Blobs.Get(blob), CPU);
        model.eval();
        using var expected = nn.functional.softmax(model.call(images), 1);
        Assert.True(probs.allclose(expected, rtol: 1e-5, atol: 1e-7));
        Assert.True(probs.sum(1).allclose(ones(8), rtol: 1e-5));
    }

    [Fact]
    public void Should_fail_the_run_with_the_reason_when_the_teacher_cannot_be_loaded_and_keep_no_request_waiting()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "badteacher");
        var run = $"t{Guid.NewGuid():N}"[..12];
        var id = EntityId.Teacher(run);
        var blob = h.Services.Blobs.Put([1, 2, 3, 4, 5, 6, 7, 8]);   // stored intact, but no model
        var teacher = h.Sys.ActorOf(TeacherEntity.GetProps(id, h.Services));
        teacher.Tell(new StartEntity(id, run, ActorHarness.Spec("teach"), blob));
        manual_seed(2);
        using var images = randn(2, 1, 32, 32);
        teacher.Tell(new LabelBatch(id, 1, TensorWire.ToPayload(images), EntityId.Student(run, 0)));
        var failed = h.Coordinator.FishForMessage<EntityFailed>(_ => true, Long);
        Assert.Equal((run, id), (failed.RunId, failed.EntityId));
        Assert.Contains("the teacher could not be loaded", failed.Reason);
        // a request that waited, and one that comes later, are dropped, not kept forever
        teacher.Tell(new LabelBatch(id, 2, TensorWire.ToPayload(images), EntityId.Student(run, 0)));
        teacher.Tell(new GetEntityStatus(id), h.Students);
        Assert.Equal("failed", h.Students.ExpectMsg<EntityStatus>(Long).Detail);
        h.Students.ExpectNoMsg(TimeSpan.FromMilliseconds(500));
    }

    [Theory]
    [MemberData(nameof(ActorHarness.Providers), MemberType = typeof(ActorHarness))]
    public void Should_pull_a_window_train_in_order_checkpoint_and_resume_from_its_last_checkpoint(string provider)
    {
        using var h = new ActorHarness(provider, "student");
        var run = $"s{Guid.NewGuid():N}"[..12];
        var id = EntityId.Student(run, 0);
        var student = h.Sys.ActorOf(StudentEntity.GetProps(id, h.Services));
        student.Tell(new StartEntity(id, run, ActorHarness.Spec("stud", checkpointEvery: 2, window: 2), h.TeacherBlob()));
        var ask = h.Generators.ExpectMsg<RequestBatches>(Long);
        Assert.Equal((1L, 2, id), (ask.FromSeq, ask.Count, ask.ReplyTo));
        // out of order delivery: 2 waits for 1
        student.Tell(Batch(id, 2));
        h.Generators.ExpectNoMsg(TimeSpan.FromMilliseconds(500));
        student.Tell(Batch(id, 1));
        var more = h.Generators.ExpectMsg<RequestBatches>(Long);
        Assert.Equal(3, more.FromSeq);
        // after step 2 the window moves on to 4, and a checkpoint covers batches 1-2: the generator may drop them
        h.Generators.ExpectMsg<RequestBatches>(m => m.FromSeq == 4, Long);
        h.Generators.ExpectMsg<ReleaseBatches>(m => m.UpToSeq == 2, Long);
        student.Tell(Batch(id, 3));
        h.Generators.ExpectMsg<RequestBatches>(m => m.FromSeq == 5, Long);
        h.Stop(student);

        var back = h.Sys.ActorOf(StudentEntity.GetProps(id, h.Services));
        // step 3 was after the checkpoint: it is asked for again (and the generator's pool still has it)
        var resumed = h.Generators.ExpectMsg<RequestBatches>(Long);
        Assert.Equal((3L, 2), (resumed.FromSeq, resumed.Count));
        var probe = h.Kit.CreateTestProbe();
        back.Tell(new GetEntityStatus(id), probe);
        Assert.Equal(2, probe.ExpectMsg<EntityStatus>(Long).Step);
    }

    /// <summary>A student stopped before its first checkpoint says, once back, that it trains again from step 0 (its progress line went back without a word).</summary>
    [Fact]
    public void Should_say_it_trains_again_from_step_0_when_it_restarts_before_its_first_checkpoint()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "nockpt");
        var run = $"n{Guid.NewGuid():N}"[..12];
        var id = EntityId.Student(run, 0);
        var student = h.Sys.ActorOf(StudentEntity.GetProps(id, h.Services));
        student.Tell(new StartEntity(id, run, ActorHarness.Spec("nockpt", checkpointEvery: 4, window: 2), h.TeacherBlob()));
        h.Generators.ExpectMsg<RequestBatches>(Long);
        student.Tell(Batch(id, 1));
        h.Coordinator.FishForMessage(m => m is RunMetrics { Step: 1 }, Long);   // step 1 trained (its loss is logged)
        // a first start says nothing of the kind
        Assert.DoesNotContain(h.Coordinator.ReceiveWhile(TimeSpan.FromMilliseconds(500), m => m), m => m is EntityProgress { Message: { } t } && t.Contains("from step 0"));
        h.Stop(student);

        h.Sys.ActorOf(StudentEntity.GetProps(id, h.Services));
        var news = (EntityProgress)h.Coordinator.FishForMessage(m => m is EntityProgress { Message: not null }, Long);
        Assert.Equal((0L, "restarted before its first checkpoint: training again from step 0"), (news.Step, news.Message));
    }

    /// <summary>A student of a new run (its id begins with `prefix`) trained 4 steps, checkpointed at 2 and 4, and stopped.</summary>
    private static (string Run, string Id) TrainFourStepsAndStop(ActorHarness h, string prefix)
    {
        var run = $"{prefix}{Guid.NewGuid():N}"[..12];
        var id = EntityId.Student(run, 0);
        var student = h.Sys.ActorOf(StudentEntity.GetProps(id, h.Services));
        student.Tell(new StartEntity(id, run, ActorHarness.Spec(prefix, checkpointEvery: 2, window: 4), h.TeacherBlob()));
        h.Generators.ExpectMsg<RequestBatches>(Long);
        for (var s = 1; s <= 4; s++) student.Tell(Batch(id, s));
        h.Generators.FishForMessage(m => m is ReleaseBatches { UpToSeq: 4 }, Long);
        h.Stop(student);
        return (run, id);
    }

    /// <summary>
    /// A stop that wakes a passivated entity (a cancelled trial paused at a rung) ends it: its
    /// recovery starts loading the engine, but the stop comes first, so nothing trains, asks for
    /// batches or tells the run it resumed.
    /// </summary>
    [Fact]
    public void Should_stop_an_entity_woken_by_its_runs_end_without_resuming_it()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "woken");
        var (run, id) = TrainFourStepsAndStop(h, "w");
        h.Coordinator.ReceiveWhile(TimeSpan.FromMilliseconds(200), m => m);
        h.Generators.ReceiveWhile(TimeSpan.FromMilliseconds(200), m => m);

        var back = h.Sys.ActorOf(StudentEntity.GetProps(id, h.Services));
        back.Tell(new StopEntity(id));
        // long enough for the engine it began to load (a second or two here); the metrics rows it
        // held unacknowledged are sent again, and nothing else
        var told = h.Coordinator.ReceiveWhile(TimeSpan.FromSeconds(8), m => m);
        Assert.DoesNotContain(told, m => m is not RunMetrics { Report: not null });
        h.Generators.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
        var probe = h.Kit.CreateTestProbe();
        back.Tell(new GetEntityStatus(id), probe);
        Assert.Equal("finished", probe.ExpectMsg<EntityStatus>(Long).Detail);
    }

    [Fact]
    public void Should_report_a_corrupt_checkpoint_with_run_and_entity_and_fall_back_to_the_previous_one()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "corrupt");
        var (run, id) = TrainFourStepsAndStop(h, "c");

        // flip bytes in the newest checkpoint blob (the largest files are checkpoints; take the newest)
        var newest = Directory.EnumerateFiles(h.Options.StoreDir, "*.bin", SearchOption.AllDirectories)
            .Select(f => new FileInfo(f)).OrderByDescending(f => f.LastWriteTimeUtc).First();
        var bytes = File.ReadAllBytes(newest.FullName);
        bytes[bytes.Length / 2] ^= 0xFF;
        File.WriteAllBytes(newest.FullName, bytes);

        h.Coordinator.ReceiveWhile(TimeSpan.FromMilliseconds(200), m => m);
        var back = h.Sys.ActorOf(StudentEntity.GetProps(id, h.Services));
        var warning = h.Coordinator.FishForMessage<EntityProgress>(m => m.Message?.Contains("corrupt") == true, Long);
        // the progress names run and entity; its message, which events.log and status show after them, does not again
        Assert.Equal(run, warning.RunId);
        Assert.Equal(id, warning.EntityId);
        Assert.StartsWith("checkpoint at step 4", warning.Message);
        Assert.Contains("checkpoint at step 4", warning.Message);
        Assert.Contains("recovered from the checkpoint at step 2", warning.Message);
        Assert.Equal(3, h.Generators.FishForMessage<RequestBatches>(_ => true, Long).FromSeq);
    }

    [Fact]
    public void Should_end_with_the_same_weights_after_a_restart_between_checkpoints_as_without_one()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "same");
        string Train(string run, int stopAfter)
        {
            var id = EntityId.Student(run, 0);
            var spec = ActorHarness.Spec("same", steps: 8, evalEvery: 8, checkpointEvery: 4, window: 8);
            var student = h.Sys.ActorOf(StudentEntity.GetProps(id, h.Services));
            student.Tell(new StartEntity(id, run, spec, h.TeacherBlob()));
            h.Generators.FishForMessage<RequestBatches>(_ => true, Long);
            var upTo = stopAfter > 0 ? stopAfter : 8;
            for (var s = 1; s <= upTo; s++) student.Tell(Batch(id, s));
            if (stopAfter > 0)
            {
                var probe = h.Kit.CreateTestProbe();
                h.Kit.AwaitAssert(() =>
                {
                    student.Tell(new GetEntityStatus(id), probe);
                    Assert.Equal(stopAfter, probe.ExpectMsg<EntityStatus>(Long).Step);
                }, Long);
                h.Stop(student);
                student = h.Sys.ActorOf(StudentEntity.GetProps(id, h.Services));
                Assert.Equal(5, h.Generators.FishForMessage<RequestBatches>(_ => true, Long).FromSeq);
                for (var s = 5; s <= 8; s++) student.Tell(Batch(id, s));
            }
            return h.Coordinator.FishForMessage<StudentFinished>(_ => true, Long).StudentBlob;
        }
        var straight = Train($"u{Guid.NewGuid():N}"[..12], 0);
        var resumed = Train($"v{Guid.NewGuid():N}"[..12], 6);
        Assert.Equal(straight, resumed);   // content hashes: bit-identical weights
    }

    /// <summary>A labelled batch made on the engine's compute thread (entities may be computing meanwhile).</summary>
    internal static LabelledBatch Batch(string student, long seq) => EngineAccess.Compute(() =>
    {
        manual_seed(100 + seq);
        using var x = randn(16, 1, 32, 32);
        using var p = nn.functional.softmax(randn(16, 10) * 2, 1);
        return new LabelledBatch(student, seq, TensorWire.ToPayload(x), TensorWire.ToPayload(p), 1);
    }).GetAwaiter().GetResult();
}
