using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Students;
using Cluster.Contracts.Sweeps;
using MessagePack;

namespace Cluster.Contracts.Serialization;

/// <summary>
/// The one table from contract type to manifest and back. Manifests are short constants; a
/// manifest not in the table, or bytes that do not decode as the named contract, are refused with
/// the reason: a peer can never make us build a type of its choosing.
/// </summary>
public static class ContractCodec
{
    /// <summary>Default largest message (16 MiB): the paper's DAFL batch of 512 32x32 images is 2 MiB.</summary>
    public const long DefaultMaxMessageBytes = 16L << 20;

    private static readonly MessagePackSerializerOptions Options =
        MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    /// <summary>Every contract and its manifest: the only types this codec ever builds.</summary>
    private static readonly (Type Type, string Manifest)[] Contracts =
    [
        (typeof(SubmitRun), "R1"), (typeof(RunAccepted), "R2"), (typeof(RunRejected), "R3"), (typeof(GetRunStatus), "R4"),
        (typeof(RunStatusReport), "R5"), (typeof(EntityProgress), "R6"), (typeof(TeacherReady), "R7"), (typeof(StudentFinished), "R8"),
        (typeof(EntityFailed), "R9"), (typeof(GetRunLayout), "R10"), (typeof(RunLayout), "R11"), (typeof(RunMetrics), "R12"), (typeof(RunSamples), "R13"),
        (typeof(CancelRun), "R14"), (typeof(CancelAnswer), "R15"),
        (typeof(StartEntity), "P1"), (typeof(RequestBatches), "P2"), (typeof(ReleaseBatches), "P3"), (typeof(LabelBatch), "P4"),
        (typeof(LabelledBatch), "P5"), (typeof(GetEntityStatus), "P6"), (typeof(EntityStatus), "P7"), (typeof(StopEntity), "P8"),
        (typeof(CompetitorReady), "P9"), (typeof(PauseEntity), "P10"),
        (typeof(GradientChunk), "G1"), (typeof(ReplicaAt), "G2"),
        (typeof(RunSubmitted), "E1"), (typeof(RunTeacherReady), "E2"), (typeof(RunCompleted), "E3"), (typeof(RunFailed), "E4"),
        (typeof(CoordinatorSnapshot), "E5"), (typeof(EntityStarted), "E6"), (typeof(BatchStored), "E7"), (typeof(BatchesReleased), "E8"),
        (typeof(CheckpointWritten), "E9"), (typeof(EntitySnapshot), "E10"), (typeof(EntityFinished), "E11"),
        (typeof(RunCancelled), "E12"),
        (typeof(SubmitSweep), "S1"), (typeof(SweepAccepted), "S2"), (typeof(SweepRejected), "S3"), (typeof(GetSweepStatus), "S4"),
        (typeof(SweepStatusReport), "S5"), (typeof(CancelSweep), "S6"), (typeof(TrialMetrics), "S7"), (typeof(TrialRunEnded), "S8"),
        (typeof(SweepSubmitted), "E13"), (typeof(TrialCreated), "E14"), (typeof(TrialLaunched), "E15"), (typeof(TrialReported), "E16"),
        (typeof(TrialEnded), "E17"), (typeof(SweepEnded), "E18"), (typeof(RunAdmitted), "E19"),
        (typeof(RunPaused), "E20"), (typeof(RunResumed), "E21"), (typeof(EntityHold), "E22"), (typeof(TrialPaused), "E23"), (typeof(TrialPromoted), "E24"),
        (typeof(StudentHeld), "R16"), (typeof(ResumeRun), "R17"), (typeof(TrialRunPaused), "S9"),
        (typeof(GetCheckpointAt), "P11"), (typeof(CheckpointAt), "P12"), (typeof(TrialExploited), "E25"),
        (typeof(ReportsReceived), "R18"), (typeof(ReportQueued), "E26"), (typeof(GetBusyRuns), "R19"), (typeof(BusyRuns), "R20"),
    ];

    private static readonly Dictionary<Type, string> ManifestOf = Contracts.ToDictionary(c => c.Type, c => c.Manifest);
    private static readonly Dictionary<string, Type> TypeOf = Contracts.ToDictionary(c => c.Manifest, c => c.Type);

    /// <summary>The contract a manifest names, or null for one outside the table.</summary>
    public static Type? ContractType(string manifest) => TypeOf.GetValueOrDefault(manifest);

    /// <summary>
    /// The message without its bulk bytes, and those bytes (null for a contract that has none): a
    /// gradient chunk's values, a batch's images. A stream transport writes the header encoded and
    /// the bytes as they are, and hands both to <see cref="Deserialize(ReadOnlyMemory{byte}, string, long, byte[])"/>.
    /// </summary>
    public static (object Header, byte[]? Bulk) DetachBulk(object message) => message switch
    {
        GradientChunk c => (c with { Values = c.Values with { Data = [] } }, c.Values.Data),
        LabelledBatch b => (b with { Images = b.Images with { Data = [] } }, b.Images.Data),
        _ => (message, null),
    };

    private static object AttachBulk(object header, byte[] bulk, string manifest) => header switch
    {
        GradientChunk c when c.Values is not null => c with { Values = c.Values with { Data = bulk } },
        LabelledBatch b when b.Images is not null => b with { Images = b.Images with { Data = bulk } },
        _ => throw new WireException($"'{manifest}' came with {bulk.Length:N0} bulk bytes, but a {header.GetType().Name} carries none"),
    };

    public static string Manifest(object message) =>
        ManifestOf.TryGetValue(message.GetType(), out var m) ? m
            : throw new ArgumentException($"{message.GetType().FullName} is not a ClusterDistill wire contract");

    public static byte[] Serialize(object message, long maxBytes = DefaultMaxMessageBytes)
    {
        _ = Manifest(message);   // refuses anything outside the table
        var bytes = MessagePackSerializer.Serialize(message.GetType(), message, Options);
        CheckSize(message, bytes.Length, maxBytes);
        return bytes;
    }

    /// <summary>Appends the message's bytes to writer (no intermediate array); returns how many.</summary>
    /// <param name="bulkBytes">Bytes sent after these (<see cref="DetachBulk"/>): they count against the limit too.</param>
    public static int Serialize(System.Buffers.ArrayBufferWriter<byte> writer, object message, long maxBytes = DefaultMaxMessageBytes, long bulkBytes = 0)
    {
        _ = Manifest(message);
        var before = writer.WrittenCount;
        MessagePackSerializer.Serialize(message.GetType(), writer, message, Options);
        var count = writer.WrittenCount - before;
        CheckSize(message, count + bulkBytes, maxBytes);
        return count;
    }

    private static void CheckSize(object message, long bytes, long maxBytes)
    {
        if (bytes > maxBytes)
            throw new WireException($"{message.GetType().Name} is {bytes:N0} bytes, over the {maxBytes:N0}-byte message limit " +
                                    "(akka.remote maximum-frame-size / clusterdistill.wire.max-message-bytes): use a smaller batch or fp16 payloads");
    }

    /// <param name="bulk">The bytes <see cref="DetachBulk"/> took out, sent after the encoded header; null when none were.</param>
    public static object Deserialize(ReadOnlyMemory<byte> bytes, string manifest, long maxBytes = DefaultMaxMessageBytes, byte[]? bulk = null)
    {
        if (bytes.Length + (bulk?.Length ?? 0) > maxBytes)
            throw new WireException($"message '{manifest}' of {bytes.Length + (bulk?.Length ?? 0):N0} bytes refused: over the {maxBytes:N0}-byte limit");
        if (!TypeOf.TryGetValue(manifest, out var type))
            throw new WireException($"unknown manifest '{manifest}' ({bytes.Length} bytes): not a ClusterDistill contract, refused");
        try
        {
            var message = MessagePackSerializer.Deserialize(type, bytes, Options)
                          ?? throw new WireException($"'{manifest}' payload of {bytes.Length} bytes decodes to nothing, refused");
            if (bulk is not null) message = AttachBulk(message, bulk, manifest);
            Validate(message, maxBytes);
            return message;
        }
        catch (MessagePackSerializationException e)
        {
            throw new WireException($"malformed '{manifest}' payload of {bytes.Length} bytes refused: {e.InnerException?.Message ?? e.Message}", e);
        }
    }

    /// <summary>Tensor payloads must agree with their shapes before anyone trusts their sizes.</summary>
    private static void Validate(object message, long maxBytes)
    {
        try
        {
            switch (message)
            {
                case LabelBatch m: m.Images.Validate(maxBytes); m.Labels?.Validate(maxBytes); break;
                case LabelledBatch m: m.Images.Validate(maxBytes); m.SoftLabels?.Validate(maxBytes); m.Labels?.Validate(maxBytes); break;
                case GradientChunk m: m.Values.Validate(maxBytes); break;
            }
        }
        catch (Exception e) when (e is InvalidDataException or NullReferenceException or OverflowException)
        {
            throw new WireException($"{message.GetType().Name} refused: {e.Message}", e);
        }
    }
}

/// <summary>A message that cannot cross the wire: too large, unknown or malformed.</summary>
public sealed class WireException(string message, Exception? inner = null) : Exception(message, inner);
