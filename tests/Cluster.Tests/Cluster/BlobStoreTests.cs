using System.Security.Cryptography;
using Cluster.Node.Storage;

namespace Cluster.Tests.Cluster;

/// <summary>The content-addressed store on a real directory: names, staging, corruption.</summary>
public sealed class BlobStoreTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"cd-blobs-{Guid.NewGuid():N}");
    private readonly BlobStore store;

    public BlobStoreTests() => store = new BlobStore(root);

    public void Dispose()
    {
        try { Directory.Delete(root, true); } catch (IOException) { }
    }

    private static byte[] Bytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void Sweeping_removes_only_staged_files_older_than_the_age()
    {
        var old = store.Stage(Bytes(1000, 7));
        var fresh = store.Stage(Bytes(1000, 8));
        var kept = store.Put(Bytes(1000, 9));
        File.SetLastWriteTimeUtc(old.TempPath!, DateTime.UtcNow.AddHours(-2));
        File.SetLastWriteTimeUtc(store.PathOf(kept), DateTime.UtcNow.AddHours(-2));
        Assert.Equal(1, store.SweepStaged(TimeSpan.FromHours(1)));
        Assert.False(File.Exists(old.TempPath));
        Assert.True(File.Exists(fresh.TempPath));   // a staging still in progress (another node's, on shared storage)
        Assert.Equal(Bytes(1000, 9), store.Get(kept));   // stored blobs are never swept, however old
        Assert.Equal(fresh.Hash, store.Commit(fresh));
        Assert.Equal(0, store.SweepStaged(TimeSpan.FromHours(1)));
    }

    [Fact]
    public void Owners_that_store_the_same_bytes_delete_only_their_own_copy()
    {
        // two replicas' identical checkpoints, or two runs' identical real-data batches
        var bytes = Bytes(1000, 3);
        var a = store.Scope("run-a/generator/0");
        var b = store.Scope("run-b/generator/0");
        var hash = a.Put(bytes);
        Assert.Equal(hash, b.Put(bytes));
        a.Delete(hash);
        Assert.False(a.Exists(hash));
        Assert.Equal(bytes, b.Get(hash));
        Assert.StartsWith(Path.Combine(root, "owners"), b.PathOf(hash));
        Assert.NotEqual(Path.GetDirectoryName(Path.GetDirectoryName(a.PathOf(hash))), Path.GetDirectoryName(Path.GetDirectoryName(b.PathOf(hash))));
    }

    [Fact]
    public void A_blob_is_named_by_the_sha256_of_its_bytes()
    {
        var bytes = Bytes(1000, 1);
        var hash = store.Put(bytes);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(bytes)), hash);
        Assert.Equal(Path.Combine(root, hash[..2], hash + ".bin"), store.PathOf(hash));
        Assert.Equal(bytes, store.Get(hash));
    }

    [Fact]
    public void A_staged_blob_has_no_name_until_it_is_committed()
    {
        var bytes = Bytes(600_000, 2);
        var staged = store.Stage(bytes);
        Assert.NotNull(staged.TempPath);
        Assert.True(File.Exists(staged.TempPath));
        // nothing can read it by its hash yet: a crash here leaves only a temporary file
        Assert.False(store.Exists(staged.Hash));
        Assert.Throws<BlobException>(() => store.Get(staged.Hash));

        Assert.Equal(staged.Hash, store.Commit(staged));
        Assert.False(File.Exists(staged.TempPath));
        Assert.Equal(bytes, store.Get(staged.Hash));
        Assert.Empty(Directory.GetFiles(root, "*.tmp", SearchOption.AllDirectories));
    }

    [Fact]
    public void Staging_bytes_already_stored_writes_nothing()
    {
        var bytes = Bytes(5000, 3);
        var hash = store.Put(bytes);
        var again = store.Stage(bytes);
        Assert.Equal(hash, again.Hash);
        Assert.Null(again.TempPath);
        Assert.Equal(hash, store.Commit(again));
        Assert.Empty(Directory.GetFiles(root, "*.tmp", SearchOption.AllDirectories));
    }

    [Fact]
    public void Committing_a_staged_blob_whose_file_vanished_names_the_blob_and_the_file()
    {
        var staged = store.Stage(Bytes(100, 4));
        File.Delete(staged.TempPath!);
        var e = Assert.Throws<BlobException>(() => store.Commit(staged));
        Assert.Contains(staged.Hash[..12], e.Message);
        Assert.Contains(staged.TempPath!, e.Message);
        Assert.False(store.Exists(staged.Hash));
    }

    [Fact]
    public void Corrupt_or_missing_blobs_are_refused_with_the_reason()
    {
        var hash = store.Put(Bytes(2000, 5));
        var path = store.PathOf(hash);
        var bytes = File.ReadAllBytes(path);
        bytes[100] ^= 0xff;
        File.WriteAllBytes(path, bytes);
        var corrupt = Assert.Throws<BlobException>(() => store.Get(hash));
        Assert.Contains("corrupt", corrupt.Message);
        File.Delete(path);
        Assert.Contains("missing", Assert.Throws<BlobException>(() => store.Get(hash)).Message);
        Assert.Contains("not a blob hash", Assert.Throws<BlobException>(() => store.Get("../../etc/passwd")).Message);
    }
}
