using Akka.Actor;
using Cluster.Contracts;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Node.Actors;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The guard on a generator's own metrics in the actor pipeline: a batch that fails the check
/// (here every one, as guard.min_classes is above the ten classes there are) takes the generator
/// back with its learning rate scaled, the batches still come in order, a batch made again
/// replays from the rollback's checkpoint bit for bit, and after guard.max_rollbacks the run fails.
/// </summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class SourceGuardTests(MnistFixture mnist)
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(90);

    private static string Spec(int maxRollbacks) =>
        ActorHarness.Spec("guarded", generatorCheckpointEvery: 3) + $"\nguard: {{check_every: 2, min_classes: 11, max_rollbacks: {maxRollbacks}}}\n";

    [Fact]
    public void Should_take_a_collapsed_generator_back_and_make_later_batches_again_from_the_rollback()
    {
        _ = mnist;
        using var h = new ActorHarness(ActorHarness.Sqlite, "srcguard");
        var run = $"g{Guid.NewGuid():N}"[..12];
        var id = EntityId.Generator(run);
        const string student = "g/student/0";
        var gen = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        gen.Tell(new StartEntity(id, run, Spec(maxRollbacks: 6), h.TeacherBlob()));
        gen.Tell(new RequestBatches(id, 1, 8, student));
        var first = Enumerable.Range(0, 8).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq);
        Assert.Equal(Enumerable.Range(1, 8).Select(i => (long)i), first.Keys.Order());
        // batches 1 (the engine loop reads its first step's metrics too), 2, 4, 6 and 8 carry metrics and
        // fail: five rollbacks, none healthy, so to the initial weights first and then to what the last
        // rollback went back to (read from its checkpoint)
        var said = new List<string>();
        var counted = new List<int?>();
        h.Coordinator.FishForMessage(m =>
        {
            if (m is EntityFailed f) throw new Xunit.Sdk.XunitException($"the run failed: {f.Reason}");
            if (m is EntityProgress { Message: { } text } p && text.Contains("guard")) { said.Add(text); counted.Add(p.SourceRollbacks); }
            return said.Count == 5;
        }, Long);
        Assert.Equal([1, 2, 3, 4, 5], counted);   // what result.json's source_rollbacks shows
        Assert.All(said, s => Assert.Contains("generator collapse", s));
        Assert.Equal(["its initial weights", "its weights after batch 1", "its weights after batch 2", "its weights after batch 4", "its weights after batch 6"],
            said.Select(s => System.Text.RegularExpressions.Regex.Match(s, "went back to (.+) and its learning rate").Groups[1].Value));
        Assert.Equal(["1", "2", "4", "6", "8"], said.Select(s => System.Text.RegularExpressions.Regex.Match(s, @" at batch (\d+);").Groups[1].Value));
        Assert.Contains("rollback 5", said[4]);

        // every student releases them; one that fell back asks for 3 and 5-7 again: made again from
        // the rollbacks' checkpoints (the one at 2 is kept past the newest three), bit for bit
        gen.Tell(new ReleaseBatches(id, student, 8));
        var probe = h.Kit.CreateTestProbe();
        h.Kit.AwaitAssert(() =>
        {
            gen.Tell(new GetEntityStatus(id), probe);
            Assert.Equal(0, probe.ExpectMsg<EntityStatus>(Long).PoolBatches);
        }, Long);
        gen.Tell(new RequestBatches(id, 3, 1, student));
        SourceRebuildTests.AssertSame(first[3], h.Students.ExpectMsg<LabelledBatch>(Long));
        gen.Tell(new RequestBatches(id, 5, 3, student));
        foreach (var seq in new long[] { 5, 6, 7 }) SourceRebuildTests.AssertSame(first[seq], h.Students.ExpectMsg<LabelledBatch>(Long));

        // a new incarnation restores the rollback at 8 and goes on from it as if it had not stopped:
        // the same batches as a source that never stopped, and the sixth rollback (at 10) is its last
        h.Stop(gen);
        var again = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        again.Tell(new RequestBatches(id, 9, 4, student));
        var resumed = Enumerable.Range(0, 4).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq);
        var gaveUp = h.Coordinator.FishForMessage<EntityFailed>(_ => true, Long);
        Assert.Contains("at batch 12; gave up after 6 rollbacks", gaveUp.Reason);

        var straightRun = $"u{Guid.NewGuid():N}"[..12];
        var straightId = EntityId.Generator(straightRun);
        var straight = h.Sys.ActorOf(SourceEntity.GetProps(straightId, h.Services));
        straight.Tell(new StartEntity(straightId, straightRun, Spec(maxRollbacks: 6), h.TeacherBlob()));
        straight.Tell(new RequestBatches(straightId, 1, 12, "u/student/0"));
        var uninterrupted = Enumerable.Range(0, 12).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq);
        foreach (var seq in new long[] { 1, 5, 8 }) SourceRebuildTests.AssertSame(first[seq], uninterrupted[seq]);
        foreach (var seq in new long[] { 9, 10, 11, 12 }) SourceRebuildTests.AssertSame(uninterrupted[seq], resumed[seq]);
    }

    [Fact]
    public void Should_fail_the_run_naming_the_collapse_after_max_rollbacks()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "srcguardfail");
        var run = $"f{Guid.NewGuid():N}"[..12];
        var id = EntityId.Generator(run);
        const string student = "f/student/0";
        var gen = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        gen.Tell(new StartEntity(id, run, Spec(maxRollbacks: 1), h.TeacherBlob()));
        gen.Tell(new RequestBatches(id, 1, 8, student));
        var failed = h.Coordinator.FishForMessage<EntityFailed>(_ => true, Long);
        Assert.Equal(run, failed.RunId);
        Assert.Contains("generator collapse", failed.Reason);
        Assert.Contains("batch 2", failed.Reason);
        Assert.Contains("gave up after 1 rollbacks", failed.Reason);
        // batches up to the one that failed were stored and served, none after it
        var got = h.Students.ReceiveWhile(TimeSpan.FromSeconds(2), m => m as LabelledBatch).Select(b => b!.Seq).ToList();
        Assert.Equal([1L, 2], got.Order());
    }
}
