using Akka.Actor;
using Akka.Configuration;
using Akka.Serialization;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Contracts.Serialization;
using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;
using Cluster.Node.Configuration;
using MessagePack;
using System.Runtime.Serialization;

namespace Cluster.Tests.Cluster;

public sealed class ContractSerializerTests : IDisposable
{
    private readonly ActorSystem system;

    public ContractSerializerTests()
    {
        var options = new NodeOptions
        {
            Persistence = PersistenceOptions.Sqlite(Path.Combine(Path.GetTempPath(), "unused.db")),
            StoreDir = Path.GetTempPath(), RunsDir = Path.GetTempPath(), MaxMessageBytes = 1 << 20,
        };
        // the production configuration, but a local provider: only the serialization section matters here
        system = ActorSystem.Create("wire", ConfigurationFactory.ParseString("akka.actor.provider = local").WithFallback(HoconBuilder.Build(options)));
    }

    public void Dispose() => system.Terminate().Wait();

    private static TensorPayload Floats(params long[] shape)
    {
        var n = shape.Aggregate(1L, (a, b) => a * b);
        var data = new byte[n * 4];
        new Random(1).NextBytes(data);
        return new TensorPayload(shape, WireDType.Float32, data);
    }

    public static TheoryData<IWireMessage> Every() =>
    [
        new SubmitRun("name: x", "x.yaml", null),
        new RunAccepted("r1", true),
        new RunRejected("because"),
        new GetRunStatus(null),
        new RunStatusReport([new RunSummary("r1", "n", "dafl", RunState.Training, 5, 10, 7, 2, 1, 2, 98.5, null, null, "node", "node2")]),
        new GetRunLayout("r1"),
        new RunLayout("r1", true, "fast", null, ["a", "b"]),
        new EntityProgress("r1", "r1/student/0", 4, 10, 1, 0, 91.5, "127.0.0.1:1", "recovered from step 2"),
        new TeacherReady("r1", new string('a', 64), 98.1, 12.5, true),
        new StudentFinished("r1", "r1/student/0", 91, 92, 10, new string('b', 64), 1),
        new EntityFailed("r1", "r1/generator/0", "nan"),
        new RunMetrics("r1", "r1/student/0", 250, ["loss_kd", "test_accuracy"], [0.25, 91.5]),
        new RunSamples("r1", "r1/generator/0", 250, [0x89, 0x50, 0x4E, 0x47]),
        new RunMetrics("r1", "r1/student/0", 275, ["loss"], [0.5], new ReportHeader(12, 10, 1_765_000_000_000, 3.5)),
        new RunSamples("r1", "r1/generator/0", 275, [0x89], new ReportHeader(3, 0, 1_765_000_000_000)),
        new ReportsReceived("r1", "r1/student/0", 12, Missing: true),
        new GetBusyRuns(),
        new BusyRuns(["r1", "s-t0001"]),
        new ReportQueued(new RunMetrics("r1", "r1/student/0", 275, ["loss"], [0.5], new ReportHeader(12, 0, 1)), null),
        new EntitySnapshot("r1", "y", null, [], 0, [], false, null, [new ReportQueued(null, new RunSamples("r1", "r1/generator/0", 5, [1], new ReportHeader(2, 0, 1)))], 2),
        new StartEntity("r1/teacher/0", "r1", "yaml", null),
        new RequestBatches("r1/generator/0", 3, 2, "r1/student/0"),
        new ReleaseBatches("r1/generator/0", "r1/student/1", 40),
        new LabelBatch("r1/teacher/0", 3, Floats(2, 1, 4, 4), "r1/student/0"),
        new LabelledBatch("r1/student/0", 3, Floats(2, 1, 4, 4), Floats(2, 10), 1),
        new GetEntityStatus("r1/student/0"),
        new EntityStatus("r1/student/0", true, 3, 4, 1, 0, "n", "training"),
        new StopEntity("r1/student/0"),
        new CompetitorReady("r1/generator/0", 3, 400, new string('a', 64)),
        new GradientChunk("r1/student/1", 9, 0, 1, 3, 1024, Floats(1024)),
        new ReplicaAt("r1/student/0", 1, 25, 0.5),
        new RunSubmitted("r1", "yaml", "f", new DateTime(2026, 1, 2, 3, 4, 5, DateTimeKind.Utc)),
        new RunTeacherReady("r1", new string('c', 64), 97, 30.2, false),
        new RunCompleted("r1", 90, 91, 100, "", DateTime.UnixEpoch),
        new RunFailed("r1", "x"),
        new RunCancelled("r1", "by user", DateTime.UnixEpoch),
        new CancelRun("r1", "by user"),
        new CancelAnswer("r1", RunState.Cancelled, false),
        new CoordinatorSnapshot([new RunRecord("r1", "y", "f", DateTime.UnixEpoch, null, null, false, false, null, null, 0, null, null, Cancelled: true)]),
        new EntityStarted("r1", "yaml", null),
        new BatchStored(7, new string('d', 64), new string('f', 64)),
        new BatchesReleased(6),
        new CheckpointWritten(8, 8, new string('e', 64), 91.2, 92),
        new CheckpointWritten(12, 12, new string('f', 64), null, 0, Rollback: true),
        new EntityProgress("r1", "r1/generator/0", 10, 12, 0, 2, null, "node-1", "guard: ...", SourceRollbacks: 1),
        new EntitySnapshot("r1", "y", null, [new BatchStored(1, "h")], 0, [new CheckpointWritten(1, 1, "h", null, 0)], false),
        new EntityFinished(10),
        new SubmitRun("name: x", "x.yaml", "s-t0001", "s"),
        new RunSubmitted("s-t0001", "yaml", "f", DateTime.UnixEpoch, "s"),
        new SubmitSweep("name: s", "s.yaml", "s"),
        new SweepAccepted("s", false),
        new SweepRejected("because"),
        new GetSweepStatus(null),
        new SweepStatusReport([new SweepSummary("s", "n", SweepState.Running, "test_accuracy", "max", ["kd.alpha"],
            [new TrialSummary("t0000", "s-t0000", ["0.5"], TrialState.Stopped, 20, 27.1, 27.1, 1, 1, "rung 0", MetricStep: 20)], 120, null)]),
        new CancelSweep("s", "by user"),
        new TrialMetrics("s", "s-t0000", 20, ["test_accuracy"], [27.1]),
        new TrialRunEnded("s", "s-t0000", RunState.Cancelled, 20, 27.1, "stopped"),
        new SweepSubmitted("s", "yaml", "s.yaml", DateTime.UnixEpoch, true),
        new TrialCreated("s", "t0000", 0, 0, ["0.5"]),
        new TrialLaunched("s", "t0000", "s-t0000", 1),
        new TrialReported("s", "t0000", 20, 27.1, true, "rung 0", 1),
        new TrialEnded("s", "t0000", TrialState.Stopped, 20, 27.1, null),
        new SweepEnded("s", SweepState.Completed, "done", DateTime.UnixEpoch),
        new RunAdmitted("r1", DateTime.UnixEpoch),
        new TrialLaunched("s", "t0001", "s-t0001", 2, HoldAt: 47),
        new SubmitRun("yaml", "r.yaml", "r1", "s", HoldAt: 47),
        new StartEntity("student/r1/0", "r1", "yaml", null, HoldAt: 188),
        new StudentHeld("r1", "student/r1/0", 47, 91.5),
        new ResumeRun("r1", null),
        new RunPaused("r1", 47, 91.5),
        new RunResumed("r1", 188),
        new EntityHold(188),
        new PauseEntity("student/r1/0"),
        new TrialRunPaused("s", "s-t0000", 47, 91.5),
        new TrialPaused("s", "t0000", 47, 91.5, 0),
        new TrialPromoted("s", "t0000", 188, "promoted from rung 0"),
        new GetCheckpointAt("r1/generator/0", 47),
        new CheckpointAt("r1/generator/0", 47, new string('d', 64)),
        new TrialExploited("s", "t0001", "t0000", 40, ["0.01", "4"], "s-t0001-g1", 60, new string('e', 64), new string('f', 64), "bottom quantile"),
        new SubmitRun("yaml", "r.yaml", "r2", "s", 60, new ForkPoint("trial t0000", 40, new string('e', 64), null)),
    ];

    [Theory]
    [MemberData(nameof(Every))]
    public void Should_round_trip_every_contract_through_the_bound_serializer(IWireMessage message)
    {
        var serializer = system.Serialization.FindSerializerFor(message);
        var withManifest = Assert.IsType<ContractSerializer>(serializer);
        var bytes = serializer.ToBinary(message);
        var back = system.Serialization.Deserialize(bytes, ContractSerializer.Id, withManifest.Manifest(message));
        Assert.Equal(message.GetType(), back.GetType());
        // records holding arrays compare by reference, so compare what they encode to
        Assert.Equal(bytes, serializer.ToBinary(back));
    }

    // The shapes RunTeacherReady and RunRecord had before session 9 added their trailing keys.
    [MessagePackObject]
    public sealed record OldRunTeacherReady([property: Key(0)] string RunId, [property: Key(1)] string TeacherBlob, [property: Key(2)] double Accuracy);

    [MessagePackObject]
    public sealed record OldRunRecord(
        [property: Key(0)] string RunId, [property: Key(1)] string SpecYaml, [property: Key(2)] string SpecFile, [property: Key(3)] DateTime SubmittedUtc,
        [property: Key(4)] string? TeacherBlob, [property: Key(5)] double? TeacherAccuracy, [property: Key(6)] bool Completed, [property: Key(7)] bool Failed,
        [property: Key(8)] double? Accuracy, [property: Key(9)] double? BestAccuracy, [property: Key(10)] long Steps, [property: Key(11)] string? Message,
        [property: Key(12)] DateTime? CompletedUtc);

    [MessagePackObject]
    public sealed record OldCoordinatorSnapshot([property: Key(0)] OldRunRecord[] Runs);

    [Fact]
    public void Should_read_journals_written_before_the_teacher_timing_keys()
    {
        var ready = (RunTeacherReady)ContractCodec.Deserialize(MessagePackSerializer.Serialize(new OldRunTeacherReady("r1", new string('c', 64), 97)), "E2");
        Assert.Equal(("r1", 97.0, (double?)null, (bool?)null), (ready.RunId, ready.Accuracy, ready.Seconds, ready.FromCache));
        var old = new OldRunRecord("r1", "y", "f", DateTime.UnixEpoch, "b", 98, true, false, 91, 92, 100, null, DateTime.UnixEpoch);
        var snapshot = (CoordinatorSnapshot)ContractCodec.Deserialize(MessagePackSerializer.Serialize(new OldCoordinatorSnapshot([old])), SnapshotManifest);
        var r = Assert.Single(snapshot.Runs);
        Assert.Equal((91.0, 100L, (double?)null, (bool?)null), (r.Accuracy!.Value, r.Steps, r.TeacherSeconds, r.TeacherFromCache));
    }

    private static string SnapshotManifest => ContractCodec.Manifest(new CoordinatorSnapshot([]));

    // CheckpointWritten before the source's guard rollbacks added key 6.
    [MessagePackObject]
    public sealed record OldCheckpointWritten([property: Key(0)] long Step, [property: Key(1)] long Seq, [property: Key(2)] string Blob,
        [property: Key(3)] double? Accuracy, [property: Key(4)] double BestAccuracy, [property: Key(5)] double? TestAccuracy);

    [Fact]
    public void Should_read_checkpoints_journaled_before_the_rollback_key_as_ordinary_ones()
    {
        var manifest = ContractCodec.Manifest(new CheckpointWritten(1, 1, "h", null, 0));
        var c = (CheckpointWritten)ContractCodec.Deserialize(MessagePackSerializer.Serialize(new OldCheckpointWritten(500, 500, new string('a', 64), 91, 92, null)), manifest);
        Assert.Equal((500L, 500L, 92.0, false), (c.Step, c.Seq, c.BestAccuracy, c.Rollback));
    }

    // BatchStored before held batches added key 4.
    [MessagePackObject]
    public sealed record OldBatchStored([property: Key(0)] long Seq, [property: Key(1)] string Blob, [property: Key(2)] string? LabelsBlob,
        [property: Key(3)] string? TrueLabelsBlob);

    [Fact]
    public void Should_read_batches_journaled_before_the_held_key_as_written_ones()
    {
        var manifest = ContractCodec.Manifest(new BatchStored(1, "h"));
        var b = (BatchStored)ContractCodec.Deserialize(MessagePackSerializer.Serialize(new OldBatchStored(7, new string('a', 64), new string('b', 64), null)), manifest);
        Assert.Equal(new BatchStored(7, new string('a', 64), new string('b', 64), null, Held: false), b);
        var held = new BatchStored(8, new string('c', 64), null, null, Held: true);
        Assert.Equal(held, ContractCodec.Deserialize(ContractCodec.Serialize(held), manifest));
    }

    [Fact]
    public void Should_cover_every_contract_type_in_the_assembly()
    {
        var contracts = typeof(IWireMessage).Assembly.GetTypes()
            .Where(t => t is { IsClass: true, IsAbstract: false } && typeof(IWireMessage).IsAssignableFrom(t)).ToHashSet();
        var covered = ((IEnumerable<object[]>)Every()).Select(row => row[0].GetType()).ToHashSet();
        Assert.Empty(contracts.Except(covered).Select(t => t.Name));
    }

    public sealed record NotAContract(string Path);

    [Fact]
    public void Should_refuse_to_serialise_a_type_with_no_contract_and_to_read_the_typeless_serializers_id()
    {
        var e = Assert.Throws<SerializationException>(() => system.Serialization.FindSerializerFor(new NotAContract("/etc/passwd")));
        Assert.Contains("No serializer binding found for type NotAContract", e.Message);
        // what Akka's Newtonsoft serializer (id 1) would have built from a type name the sender chose
        var json = System.Text.Encoding.UTF8.GetBytes("{\"$type\":\"System.IO.FileInfo, System.IO.FileSystem\",\"OriginalPath\":\"/etc/passwd\"}");
        Assert.ThrowsAny<Exception>(() => system.Serialization.Deserialize(json, 1, typeof(FileInfo).AssemblyQualifiedName));
        var refused = Assert.Throws<SerializationException>(() => system.Serialization.Deserialize(json, NoContractSerializer.Id, typeof(FileInfo).AssemblyQualifiedName));
        Assert.Contains("refused a message for the typeless serializer", refused.Message);
    }

    [Fact]
    public async Task Should_refuse_to_send_a_message_with_no_contract_to_another_node_and_deliver_contracts()
    {
        ActorSystem Node(string name) => ActorSystem.Create(name, ConfigurationFactory.ParseString("""
            akka.actor.provider = remote
            akka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }
            """).WithFallback(HoconBuilder.Build(new NodeOptions
            {
                Persistence = PersistenceOptions.Sqlite(Path.Combine(Path.GetTempPath(), "unused.db")),
                StoreDir = Path.GetTempPath(), RunsDir = Path.GetTempPath(), MaxMessageBytes = 1 << 20, SystemName = name,
            })));
        using var a = Node("wire-a");
        using var b = Node("wire-b");
        try
        {
            var received = new System.Collections.Concurrent.BlockingCollection<object>();
            var probe = b.ActorOf(Akka.Actor.Props.Create(() => new Collector(received)), "inbox");
            var address = ((ExtendedActorSystem)b).Provider.DefaultAddress;
            var remote = await a.ActorSelection(probe.Path.ToStringWithAddress(address)).ResolveOne(TimeSpan.FromSeconds(10));
            remote.Tell(new NotAContract("/etc/passwd"));
            remote.Tell(new GetRunStatus("after"));
            Assert.True(received.TryTake(out var first, TimeSpan.FromSeconds(10)), "the contract after the refused message did not arrive");
            Assert.Equal(new GetRunStatus("after"), first);
            Assert.False(received.TryTake(out var late, TimeSpan.FromSeconds(1)), $"{late} arrived");
        }
        finally
        {
            await Task.WhenAll(a.Terminate(), b.Terminate());
        }
    }

    private sealed class Collector : ReceiveActor
    {
        public Collector(System.Collections.Concurrent.BlockingCollection<object> into) => ReceiveAny(into.Add);
    }

    [Fact]
    public void Should_refuse_an_unknown_manifest_with_its_name()
    {
        var e = Assert.Throws<WireException>(() => ContractCodec.Deserialize(new byte[] { 0x90 }, "System.Diagnostics.Process"));
        Assert.Contains("unknown manifest 'System.Diagnostics.Process'", e.Message);
    }

    [Fact]
    public void Should_refuse_malformed_bytes()
    {
        var e = Assert.Throws<WireException>(() => ContractCodec.Deserialize(new byte[] { 0xC1, 0x00, 0x13 }, "P5"));
        Assert.Contains("malformed 'P5'", e.Message);
    }

    [Fact]
    public void Should_refuse_a_tensor_whose_bytes_disagree_with_its_shape()
    {
        var bad = new LabelledBatch("r/student/0", 1, new TensorPayload([2, 1, 4, 4], WireDType.Float32, new byte[100]), Floats(2, 10), 1);
        var bytes = MessagePackSerializer.Serialize(bad);
        var e = Assert.Throws<WireException>(() => ContractCodec.Deserialize(bytes, "P5"));
        Assert.Contains("needs 128 bytes, got 100", e.Message);
    }

    [Fact]
    public void Should_refuse_messages_over_the_configured_limit_naming_it()
    {
        var serializer = system.Serialization.FindSerializerFor(new GetRunStatus(null));
        var big = new LabelBatch("r/teacher/0", 1, Floats(300, 1, 32, 32), "r/student/0");   // 1.2 MB > 1 MiB
        var e = Assert.Throws<WireException>(() => serializer.ToBinary(big));
        Assert.Contains("1,048,576-byte message limit", e.Message);
        Assert.Throws<WireException>(() => ((ContractSerializer)serializer).FromBinary(new byte[(1 << 20) + 1], "P4"));
    }

    [Fact]
    public void Should_parse_entity_ids_strictly()
    {
        Assert.Equal(new EntityId("run-1", "student", 2), EntityId.Parse("run-1/student/2"));
        Assert.Throws<FormatException>(() => EntityId.Parse("run-1/trainer/0"));
        Assert.Throws<FormatException>(() => EntityId.Parse("../x/student/0"));
        Assert.Throws<FormatException>(() => EntityId.Parse("r/student/-1"));
    }
}
