using Cluster.Node.Configuration;
using Distill.Engine.Interop;
using Distill.Engine.Runs;
using Distill.Engine.Specs;

namespace Cluster.Node.Storage;

/// <summary>
/// A run's teacher is one blob, but not its only copy: the run directory's teacher.pt, the teacher
/// entity's own teacher.pt, the spec's checkpoint (when in our own format) and the teacher cache usually hold the same
/// bytes. A missing or corrupt teacher blob is restored from the first of them whose SHA-256 is the
/// blob's name, and the caller is told so; only when none matches is it an error, naming what was
/// tried.
/// </summary>
public static class TeacherCopies
{
    /// <summary>The files on this node that may hold the run's teacher, most likely first.</summary>
    public static IReadOnlyList<string> Candidates(NodeOptions options, RunSpec spec, string runId)
    {
        var run = Path.Combine(options.RunsDir, runId);
        var files = new List<string> { Path.Combine(run, "teacher.pt"), Path.Combine(run, "teacher", "teacher.pt") };
        // a PyTorch or safetensors checkpoint was converted, so only one in our own format can match
        if (spec.Method.TeacherOf(spec)?.Checkpoint is { } checkpoint && WeightFile.IsEngineFile(checkpoint)) files.Add(checkpoint);
        var cache = Runner.TeacherCacheDir(options.TeacherCache, options.DataCache);
        if (Directory.Exists(cache)) files.AddRange(Directory.EnumerateFiles(cache, "*.pt").Order(StringComparer.Ordinal));
        return files;
    }

    /// <summary>
    /// The teacher's bytes: the blob's, or a verified copy's, which is written back to the store
    /// (`restored` says which, else null). Throws <see cref="BlobException"/> when the blob is
    /// unusable and no copy has its hash.
    /// </summary>
    public static byte[] Read(BlobStore blobs, string hash, IEnumerable<string> candidates, out string? restored)
    {
        restored = null;
        string problem;
        try { return blobs.Get(hash); }
        catch (BlobException e) { problem = e.Message; }
        var tried = new List<string>();
        foreach (var file in candidates.Distinct())
        {
            if (!File.Exists(file)) continue;
            byte[] bytes;
            try { bytes = File.ReadAllBytes(file); }
            catch (IOException) { tried.Add(file + " (unreadable)"); continue; }
            catch (UnauthorizedAccessException) { tried.Add(file + " (unreadable)"); continue; }
            if (BlobStore.Hash(bytes) != hash) { tried.Add(file); continue; }
            blobs.Restore(bytes);
            restored = $"the teacher's {problem}; restored from {file}, whose SHA-256 is the blob's";
            return bytes;
        }
        throw new BlobException($"the teacher's {problem}, and no copy on this node has its SHA-256 " +
                                (tried.Count == 0 ? "(none found)" : $"(tried {string.Join(", ", tried)})"));
    }
}
