using System.Security.Cryptography;

namespace Cluster.Node.Storage;

/// <summary>
/// Content-addressed files: weights, optimiser state and image batches are too large for a
/// journal row (a snapshot blob counts against the recovery timeout), so events hold the SHA-256
/// and the bytes live in root/ab/abcdef....bin. Written to a temporary file and renamed, so a crash
/// never leaves a half-written blob under a valid name; the hash is verified on every read. In a
/// cluster the root is shared storage (a ReadWriteMany volume) so that a survivor can read a dead
/// node's checkpoints.
/// </summary>
public sealed class BlobStore
{
    public BlobStore(string root)
    {
        Root = Path.GetFullPath(root);
        Directory.CreateDirectory(Root);
    }

    public string Root { get; }

    /// <summary>
    /// The store of one owner (an entity's batches and checkpoints) under owners/: content-addressed
    /// names collide across owners (two replicas' checkpoints are the same bytes; runs of one seed
    /// read the same real-data batches), so an owner that deletes a blob must delete only its own.
    /// </summary>
    public BlobStore Scope(string owner) =>
        new(Path.Combine(Root, "owners", string.Concat(owner.Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' ? c : '+'))));

    public string PathOf(string hash)
    {
        if (hash.Length != 64 || !hash.All(char.IsAsciiHexDigitLower))
            throw new BlobException($"'{hash}' is not a blob hash (64 lower-case hex digits)");
        return Path.Combine(Root, hash[..2], hash + ".bin");
    }

    public static string Hash(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    /// <summary>Stores the bytes (idempotent) and returns their hash.</summary>
    public string Put(ReadOnlySpan<byte> bytes) => Commit(Stage(bytes));

    /// <summary>
    /// The costly half of <see cref="Put"/>, for the thread that has the bytes: hashes them and
    /// writes them under a temporary name, without waiting for the disk. Nothing refers to a staged
    /// blob until <see cref="Commit"/> makes it durable and gives it its name.
    /// </summary>
    public StagedBlob Stage(ReadOnlySpan<byte> bytes)
    {
        var hash = Hash(bytes);
        var path = PathOf(hash);
        if (File.Exists(path) && new FileInfo(path).Length == bytes.Length) return new StagedBlob(hash, null);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var tmp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        using (var f = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            f.Write(bytes);
        return new StagedBlob(hash, tmp);
    }

    /// <summary>
    /// Flushes a staged blob to disk, then renames it to its hash (in that order: a crash never
    /// leaves a named blob whose bytes were not on disk, which a later Put of the same bytes would
    /// take for stored). Returns the hash.
    /// </summary>
    public string Commit(StagedBlob staged)
    {
        if (staged.TempPath is not { } tmp) return staged.Hash;
        if (!File.Exists(tmp)) throw new BlobException($"staged blob {staged.Hash[..12]} is missing ({tmp})");
        using (var f = new FileStream(tmp, FileMode.Open, FileAccess.Write, FileShare.None, 1))
            f.Flush(flushToDisk: true);
        File.Move(tmp, PathOf(staged.Hash), overwrite: true);
        return staged.Hash;
    }

    /// <summary>Removes a staged blob that will not be committed (its entity stopped first).</summary>
    public void Discard(StagedBlob staged)
    {
        if (staged.TempPath is { } tmp) File.Delete(tmp);
    }

    /// <summary>
    /// Deletes staged files older than `age`: a process killed between staging and committing
    /// (up to a group of batches, docs/cluster.md) leaves them, and nothing ever refers to one.
    /// Live staging is committed within seconds, so an age of an hour never touches another
    /// node's work on shared storage. Returns how many went.
    /// </summary>
    public int SweepStaged(TimeSpan age)
    {
        var cutoff = DateTime.UtcNow - age;
        var removed = 0;
        foreach (var f in Directory.EnumerateFiles(Root, "*.tmp", SearchOption.AllDirectories))
        {
            try
            {
                if (File.GetLastWriteTimeUtc(f) >= cutoff) continue;
                File.Delete(f);
                removed++;
            }
            catch (IOException) { }   // gone meanwhile, or busy: the next sweep gets it
        }
        return removed;
    }

    /// <summary>
    /// Writes the bytes under their hash even where a file of that name exists: <see cref="Put"/>
    /// takes an existing file of the right length for stored, which a corrupt blob can be.
    /// </summary>
    public string Restore(ReadOnlySpan<byte> bytes)
    {
        var hash = Hash(bytes);
        var path = PathOf(hash);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var tmp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        using (var f = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
        {
            f.Write(bytes);
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
        return hash;
    }

    /// <summary>The bytes, after checking that they still hash to their name.</summary>
    public byte[] Get(string hash)
    {
        var path = PathOf(hash);
        if (!File.Exists(path)) throw new BlobException($"blob {hash[..12]} is missing ({path})");
        var bytes = File.ReadAllBytes(path);
        var actual = Hash(bytes);
        if (actual != hash) throw new BlobException($"blob {hash[..12]} is corrupt: its {bytes.Length:N0} bytes hash to {actual[..12]} ({path})");
        return bytes;
    }

    public bool Exists(string hash) => File.Exists(PathOf(hash));

    public void Delete(string hash)
    {
        var path = PathOf(hash);
        if (File.Exists(path)) File.Delete(path);
    }
}

public sealed class BlobException(string message) : Exception(message);

/// <summary>Bytes written under TempPath (null: the blob was stored already), not yet durable or named.</summary>
public sealed record StagedBlob(string Hash, string? TempPath);
