using Akka.Actor;
using Cluster.Contracts;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Tensors;
using Cluster.Node.Actors;
using Cluster.Node.Hosting;
using Cluster.Node.Storage;
using MessagePack;

namespace Cluster.Tests.Cluster;

/// <summary>
/// A source asked for a batch it no longer holds: released after every student checkpointed past
/// it (a student that fell back to an older checkpoint asks again), or stored with its blob gone.
/// It makes the batch again, bit for bit, or fails the run with the reason; it never waits.
/// </summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class SourceRebuildTests(MnistFixture mnist)
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(90);

    [Fact]
    public void Should_make_released_batches_again_bit_for_bit_for_a_student_that_fell_back_before_them()
    {
        _ = mnist;
        using var h = new ActorHarness(ActorHarness.Sqlite, "rebuild");
        var run = $"b{Guid.NewGuid():N}"[..12];
        var id = EntityId.Generator(run);
        const string student = "s/student/0";
        var spec = ActorHarness.Spec("rebuild", generatorCheckpointEvery: 3);
        var gen = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        gen.Tell(new StartEntity(id, run, spec, h.TeacherBlob()));
        gen.Tell(new RequestBatches(id, 1, 8, student));
        var first = Enumerable.Range(0, 8).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq);
        // the student's checkpoint covers batches 1-6: the source drops them
        gen.Tell(new ReleaseBatches(id, student, 6));
        var probe = h.Kit.CreateTestProbe();
        h.Kit.AwaitAssert(() =>
        {
            gen.Tell(new GetEntityStatus(id), probe);
            Assert.Equal(2, probe.ExpectMsg<EntityStatus>(Long).PoolBatches);
        }, Long);

        // its newest checkpoint was corrupt: it fell back to step 4 and asks for 5 on
        gen.Tell(new RequestBatches(id, 5, 2, student));
        AssertSame(first[5], h.Students.ExpectMsg<LabelledBatch>(Long));
        AssertSame(first[6], h.Students.ExpectMsg<LabelledBatch>(Long));
        // no checkpoint was usable: it starts from step 0 (made again from the seed, before the source's first checkpoint)
        gen.Tell(new RequestBatches(id, 1, 3, student));
        foreach (var seq in new long[] { 1, 2, 3 }) AssertSame(first[seq], h.Students.ExpectMsg<LabelledBatch>(Long));

        // a new incarnation (the node died meanwhile) does the same from its journal
        h.Stop(gen);
        var again = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        again.Tell(new RequestBatches(id, 4, 4, student));
        // 7 is still in the pool and goes at once; 4-6 follow as they are made again
        var after = Enumerable.Range(0, 4).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq);
        foreach (var seq in new long[] { 4, 5, 6, 7 }) AssertSame(first[seq], after[seq]);
        h.Coordinator.ReceiveWhile(TimeSpan.FromMilliseconds(300), m => m is EntityFailed ? throw new Xunit.Sdk.XunitException($"the run failed: {((EntityFailed)m).Reason}") : m);
    }

    [Fact]
    public void Should_make_a_stored_batch_whose_blob_is_missing_again_and_write_its_blob_back()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "lostblob");
        var run = $"l{Guid.NewGuid():N}"[..12];
        var id = EntityId.Generator(run);
        const string student = "s/student/0";
        var gen = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        gen.Tell(new StartEntity(id, run, ActorHarness.Spec("lostblob", generatorCheckpointEvery: 3, batchMemoryMb: 0), h.TeacherBlob()));
        gen.Tell(new RequestBatches(id, 1, 5, student));
        var first = Enumerable.Range(0, 5).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq);
        var path = BlobPath(h, id, first[5].Images);
        File.Delete(path);
        var labels = BlobPath(h, id, first[2].SoftLabels!);
        File.WriteAllBytes(labels, [1, 2, 3]);

        gen.Tell(new RequestBatches(id, 5, 1, student));
        AssertSame(first[5], h.Students.ExpectMsg<LabelledBatch>(Long));
        Assert.True(File.Exists(path), "the lost blob was not written back");
        gen.Tell(new RequestBatches(id, 2, 1, student));
        AssertSame(first[2], h.Students.ExpectMsg<LabelledBatch>(Long));
        Assert.Equal(first[2].SoftLabels!.Data.Length, MessagePackSerializer.Deserialize<TensorPayload>(File.ReadAllBytes(labels)).Data.Length);
        // the pool serves it from its blobs again, and the source goes on
        gen.Tell(new RequestBatches(id, 5, 2, student));
        AssertSame(first[5], h.Students.ExpectMsg<LabelledBatch>(Long));
        Assert.Equal(6, h.Students.ExpectMsg<LabelledBatch>(Long).Seq);
    }

    /// <summary>
    /// Held batches have no blobs; a crash loses them. The new incarnation holds again those it
    /// replays after its checkpoint (4 and 5, the checkpoint at 3) and makes the others again on
    /// request, bit for bit, still without writing them.
    /// </summary>
    [Fact]
    public void Should_make_held_batches_again_bit_for_bit_after_a_restart_without_writing_them()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "heldrestart");
        var run = $"h{Guid.NewGuid():N}"[..12];
        var id = EntityId.Generator(run);
        const string student = "s/student/0";
        var gen = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        // (the guard off: the harness's barely trained teacher sees a collapse in the first batches, and a rollback is not what this is about)
        gen.Tell(new StartEntity(id, run, ActorHarness.Spec("heldrestart", generatorCheckpointEvery: 3) + "\nguard: {enabled: false}\n", h.TeacherBlob()));
        gen.Tell(new RequestBatches(id, 1, 5, student));
        var first = Enumerable.Range(0, 5).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq);
        foreach (var b in first.Values) Assert.False(File.Exists(BlobPath(h, id, b.Images)), $"held batch {b.Seq} was written");

        h.Stop(gen);
        // a stop the node chose writes what was held, for a restart to serve from disk; a crash writes
        // nothing: with the files deleted the disk is as a crash leaves it, and the batches are made again
        foreach (var b in first.Values)
        {
            var images = BlobPath(h, id, b.Images);
            Assert.True(File.Exists(images), $"held batch {b.Seq} was not written when its source stopped");
            File.Delete(images);
            if (b.SoftLabels is { } soft) File.Delete(BlobPath(h, id, soft));
        }
        var again = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        var probe = h.Kit.CreateTestProbe();
        h.Kit.AwaitAssert(() =>
        {
            again.Tell(new GetEntityStatus(id), probe);
            Assert.Contains("2 held in memory", probe.ExpectMsg<EntityStatus>(Long).Detail);
        }, Long);
        again.Tell(new RequestBatches(id, 1, 6, student));
        var after = Enumerable.Range(0, 6).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq);
        foreach (var seq in first.Keys) AssertSame(first[seq], after[seq]);
        Assert.Equal(6, after.Keys.Max());
        foreach (var b in after.Values) Assert.False(File.Exists(BlobPath(h, id, b.Images)), $"held batch {b.Seq} was written");
        h.Coordinator.ReceiveWhile(TimeSpan.FromMilliseconds(300), m => m is EntityFailed f ? throw new Xunit.Sdk.XunitException($"the run failed: {f.Reason}") : m);
    }

    /// <summary>With 1 MiB for held batches (15 of these 65 KiB ones), the oldest are written, and served again from disk.</summary>
    [Fact]
    public void Should_write_the_oldest_held_batches_when_their_memory_runs_short()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "heldlimit");
        var run = $"m{Guid.NewGuid():N}"[..12];
        var id = EntityId.Generator(run);
        const string student = "s/student/0";
        var gen = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        gen.Tell(new StartEntity(id, run, ActorHarness.Spec("heldlimit", steps: 24, batchMemoryMb: 1, window: 20), h.TeacherBlob()));
        gen.Tell(new RequestBatches(id, 1, 20, student));
        var first = Enumerable.Range(0, 20).Select(_ => h.Students.ExpectMsg<LabelledBatch>(Long)).ToDictionary(m => m.Seq);
        var bytes = first[1].Images.Data.Length + first[1].SoftLabels!.Data.Length;
        var fit = (int)((1L << 20) / bytes);
        h.Kit.AwaitAssert(() =>
        {
            var written = first.Values.Where(b => File.Exists(BlobPath(h, id, b.Images))).Select(b => b.Seq).ToList();
            Assert.Equal(Enumerable.Range(1, 20 - fit).Select(i => (long)i), written);
        }, Long);
        gen.Tell(new RequestBatches(id, 1, 1, student));
        AssertSame(first[1], h.Students.ExpectMsg<LabelledBatch>(Long));
        gen.Tell(new RequestBatches(id, 20, 1, student));
        AssertSame(first[20], h.Students.ExpectMsg<LabelledBatch>(Long));
    }

    /// <summary>ADI: round 1 competed with the initial student and is made again; round 2 competed with weights that are gone: the run fails, saying why.</summary>
    [Fact]
    public void Should_make_a_lost_round_again_and_fail_the_run_with_the_reason_for_one_that_cannot_be()
    {
        using var h = new ActorHarness(ActorHarness.Sqlite, "lostround");
        var run = $"r{Guid.NewGuid():N}"[..12];
        var id = EntityId.Generator(run);
        const string student = "a/student/0";
        var yaml = """
            name: lost-round
            method: adi
            seed: 5
            data: {name: mnist, image_size: 32}
            teacher: {arch: resnet8, train: {steps: 1}}
            student: {arch: lenet5-half, train: {optimizer: adam, lr: 0.002}}
            deepinversion: {rounds: 2, batch_size: 8, iterations: 30, student_steps: 4, student_batch: 8, competition_weight: 1}
            cluster: {generator_checkpoint_every: 10}
            """;
        var gen = h.Sys.ActorOf(SourceEntity.GetProps(id, h.Services));
        gen.Tell(new StartEntity(id, run, yaml, h.TeacherBlob(seed: 31, arch: "resnet8")));
        gen.Tell(new RequestBatches(id, 1, 1, student));
        var round1 = h.Students.ExpectMsg<LabelledBatch>(Long);
        gen.Tell(new CompetitorReady(id, 2, 4, StudentWeights(h)));
        gen.Tell(new RequestBatches(id, 2, 1, student));
        var round2 = h.Students.ExpectMsg<LabelledBatch>(Long);
        File.Delete(BlobPath(h, id, round1.Images));
        File.Delete(BlobPath(h, id, round2.Images));

        gen.Tell(new RequestBatches(id, 1, 1, student));
        AssertSame(round1, h.Students.ExpectMsg<LabelledBatch>(Long));
        gen.Tell(new RequestBatches(id, 2, 1, student));
        var failed = h.Coordinator.FishForMessage<EntityFailed>(_ => true, Long);
        Assert.Equal(run, failed.RunId);
        Assert.Contains("batch 2", failed.Reason);
        Assert.Contains("cannot be made again", failed.Reason);
        h.Students.ExpectNoMsg(TimeSpan.FromMilliseconds(300));
    }

    internal static void AssertSame(LabelledBatch expected, LabelledBatch actual)
    {
        Assert.Equal(expected.Seq, actual.Seq);
        Assert.True(expected.Images.Data.AsSpan().SequenceEqual(actual.Images.Data), $"batch {expected.Seq}: the images made again differ");
        Assert.True(expected.SoftLabels!.Data.AsSpan().SequenceEqual(actual.SoftLabels!.Data), $"batch {expected.Seq}: the labels made again differ");
    }

    private static string BlobPath(ActorHarness h, string entityId, TensorPayload p) =>
        h.Services.Blobs.Scope(entityId).PathOf(BlobStore.Hash(MessagePackSerializer.Serialize(p)));

    private static string StudentWeights(ActorHarness h) => EngineAccess.Compute(() =>
    {
        TorchSharp.torch.manual_seed(41);
        using var m = Distill.Engine.Models.ModelFactory.Create("lenet5-half", 1, 32, 10);
        return h.Services.Blobs.Put(EngineAccess.SaveModel(m));
    }).GetAwaiter().GetResult();
}
