using Akka.Actor;
using Cluster.Contracts;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Node.Actors;
using Cluster.Node.Hosting;
using Cluster.Node.Storage;
using static TorchSharp.torch;

namespace Cluster.Tests.Cluster;

/// <summary>
/// A missing or corrupt teacher blob, while good copies of the teacher are on the node: the teacher
/// and the source restore the blob from a copy with its SHA-256 (or prepare the teacher again, which
/// must give the same weights bit for bit), say so, and go on; a teacher that comes back different
/// fails the run with the reason.
/// </summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class TeacherRestoreTests(MnistFixture mnist)
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(120);

    /// <summary>Same length, other bytes: BlobStore.Put alone would take the file for stored.</summary>
    private static void Corrupt(BlobStore blobs, string hash)
    {
        var path = blobs.PathOf(hash);
        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 0x5A;
        File.WriteAllBytes(path, bytes);
    }

    private static LabelledBatch Label(ActorHarness h, IActorRef teacher, string id, string run, long seq)
    {
        // no draw from the global generator: the entity's own torch work may draw from it meanwhile
        using var images = (sin(arange(4 * 32 * 32, dtype: ScalarType.Float32) * (0.01 * (seq + 1))) * 2).reshape(4, 1, 32, 32);
        teacher.Tell(new LabelBatch(id, seq, TensorWire.ToPayload(images), EntityId.Student(run, 0)));
        return h.Students.FishForMessage<LabelledBatch>(m => m.Seq == seq, Long);
    }

    private static string Said(ActorHarness h) =>
        h.Coordinator.FishForMessage(m => m is EntityProgress { Message: not null } or EntityFailed, Long) switch
        {
            EntityProgress p => p.Message!,
            EntityFailed f => throw new Xunit.Sdk.XunitException($"the run failed: {f.Reason}"),
            var other => throw new InvalidOperationException(other.ToString()),
        };

    [Fact]
    public void Should_restore_a_corrupt_teacher_blob_from_the_run_directorys_copy_for_the_teacher_and_the_source()
    {
        _ = mnist;
        using var h = new ActorHarness(ActorHarness.Sqlite, "teachercopy");
        var run = $"c{Guid.NewGuid():N}"[..12];
        var blob = h.TeacherBlob(seed: 21);
        // the copy the coordinator writes when the teacher is ready
        Directory.CreateDirectory(Path.Combine(h.Options.RunsDir, run));
        File.WriteAllBytes(Path.Combine(h.Options.RunsDir, run, "teacher.pt"), h.Services.Blobs.Get(blob));
        var id = EntityId.Teacher(run);
        var teacher = h.Sys.ActorOf(TeacherEntity.GetProps(id, h.Services));
        teacher.Tell(new StartEntity(id, run, ActorHarness.Spec("teachercopy"), blob));
        var before = Label(h, teacher, id, run, 1);

        // the node dies; its teacher blob is damaged meanwhile
        h.Stop(teacher);
        Corrupt(h.Services.Blobs, blob);
        teacher = h.Sys.ActorOf(TeacherEntity.GetProps(id, h.Services));
        teacher.Tell(new GetEntityStatus(id));   // recovers and loads
        var said = Said(h);
        Assert.Contains($"blob {blob[..12]} is corrupt", said);
        Assert.Contains("restored from " + Path.Combine(h.Options.RunsDir, run, "teacher.pt"), said);
        Assert.Equal(before.SoftLabels!.Data, Label(h, teacher, id, run, 1).SoftLabels!.Data);
        Assert.Equal(blob, BlobStore.Hash(h.Services.Blobs.Get(blob)));

        // the source, which loads the teacher itself (DAFL), does the same with a missing blob
        File.Delete(h.Services.Blobs.PathOf(blob));
        var gid = EntityId.Generator(run);
        var source = h.Sys.ActorOf(SourceEntity.GetProps(gid, h.Services));
        source.Tell(new StartEntity(gid, run, ActorHarness.Spec("teachercopy"), blob));
        source.Tell(new RequestBatches(gid, 1, 1, EntityId.Student(run, 0)));
        said = Said(h);
        Assert.Contains($"blob {blob[..12]} is missing", said);
        Assert.Contains("restored from", said);
        Assert.Equal(1, h.Students.FishForMessage<LabelledBatch>(m => m.Seq == 1, Long).Seq);
        Assert.True(h.Services.Blobs.Exists(blob));
    }

    [Fact]
    public void Should_train_the_teacher_again_when_no_copy_is_left_and_use_it_only_because_it_is_the_same_bit_for_bit()
    {
        _ = mnist;
        using var h = new ActorHarness(ActorHarness.Sqlite, "teacheragain", o => o with { TeacherCache = Path.Combine(Path.GetTempPath(), $"cd-tcache-{Guid.NewGuid():N}") });
        try
        {
            var run = $"a{Guid.NewGuid():N}"[..12];
            var id = EntityId.Teacher(run);
            var teacher = h.Sys.ActorOf(TeacherEntity.GetProps(id, h.Services));
            teacher.Tell(new StartEntity(id, run, ActorHarness.Spec("teacheragain"), null));
            var ready = h.Coordinator.FishForMessage<TeacherReady>(_ => true, Long);
            var before = Label(h, teacher, id, run, 3);

            // every copy is gone: the blob, the entity's teacher.pt and the cache
            h.Stop(teacher);
            Corrupt(h.Services.Blobs, ready.TeacherBlob);
            File.Delete(Path.Combine(h.Options.RunsDir, run, "teacher", "teacher.pt"));
            Directory.Delete(h.Options.TeacherCache!, recursive: true);
            teacher = h.Sys.ActorOf(TeacherEntity.GetProps(id, h.Services));
            teacher.Tell(new GetEntityStatus(id));
            var said = Said(h);
            Assert.Contains("no copy on this node has its SHA-256", said);
            Assert.Contains("trained again: the same weights bit for bit", said);
            Assert.Equal(before.SoftLabels!.Data, Label(h, teacher, id, run, 3).SoftLabels!.Data);
            Assert.Equal(ready.TeacherBlob, BlobStore.Hash(h.Services.Blobs.Get(ready.TeacherBlob)));
        }
        finally
        {
            if (Directory.Exists(h.Options.TeacherCache!)) Directory.Delete(h.Options.TeacherCache!, recursive: true);
        }
    }

    [Fact]
    public void Should_fail_the_run_with_the_reason_when_the_teacher_prepared_again_is_another_one()
    {
        _ = mnist;
        using var h = new ActorHarness(ActorHarness.Sqlite, "teacherother");
        var run = $"o{Guid.NewGuid():N}"[..12];
        var checkpoint = Path.Combine(h.Dir, "teacher.pt");
        File.WriteAllBytes(checkpoint, h.Services.Blobs.Get(h.TeacherBlob(seed: 5)));
        var spec = ActorHarness.Spec("teacherother").Replace("  train: {steps: 20, batch_size: 64}", $"  checkpoint: {checkpoint}");
        var id = EntityId.Teacher(run);
        var teacher = h.Sys.ActorOf(TeacherEntity.GetProps(id, h.Services));
        teacher.Tell(new StartEntity(id, run, spec, null));
        var ready = h.Coordinator.FishForMessage<TeacherReady>(_ => true, Long);
        // loaded: its load job (which would restore a missing blob from the checkpoint, still the
        // same teacher until the next lines) is done before the blob goes
        Label(h, teacher, id, run, 1);

        // the blob is lost and the checkpoint file now holds another teacher
        h.Stop(teacher);
        File.Delete(h.Services.Blobs.PathOf(ready.TeacherBlob));
        File.WriteAllBytes(checkpoint, h.Services.Blobs.Get(h.TeacherBlob(seed: 6)));
        teacher = h.Sys.ActorOf(TeacherEntity.GetProps(id, h.Services));
        teacher.Tell(new GetEntityStatus(id));
        var failed = h.Coordinator.FishForMessage<EntityFailed>(_ => true, Long);
        Assert.Contains($"blob {ready.TeacherBlob[..12]} is missing", failed.Reason);
        Assert.Contains("loaded again from its checkpoint, it is another teacher", failed.Reason);
        Assert.Contains("the run's batches were labelled by the lost one", failed.Reason);
    }
}
