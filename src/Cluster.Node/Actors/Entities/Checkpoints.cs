using System.Collections.Immutable;
using Cluster.Contracts.Events;
using Cluster.Node.Storage;
using System.Runtime.InteropServices;

namespace Cluster.Node.Actors;

/// <summary>Restores an entity's engine from its newest checkpoint that loads, falling back to older ones.</summary>
public static class Checkpoints
{
    /// <summary>Returns the restored step (0 = none) and, when a checkpoint had to be skipped, what was skipped and why (the entity's log line and the run's events name the entity).</summary>
    public static (long Step, string? Warning) RestoreNewest(ImmutableList<CheckpointWritten> checkpoints, BlobStore blobs, Action<BinaryReader> load)
    {
        var problems = new List<string>();
        foreach (var c in checkpoints.Reverse())
        {
            try
            {
                var bytes = blobs.Get(c.Blob);
                using var r = new BinaryReader(new MemoryStream(bytes));
                load(r);
                var warning = problems.Count == 0 ? null
                    : $"{string.Join("; ", problems)}; recovered from the checkpoint at step {c.Step} instead";
                return (c.Step, warning);
            }
            catch (Exception e) when (e is BlobException or InvalidDataException or EndOfStreamException or IOException or ArgumentException or ExternalException)
            {
                problems.Add($"checkpoint at step {c.Step} (blob {c.Blob[..12]}) is unusable: {e.Message}");
            }
        }
        return (0, problems.Count == 0 ? null
            : $"{string.Join("; ", problems)}; no usable checkpoint left, starting from step 0");
    }
}
