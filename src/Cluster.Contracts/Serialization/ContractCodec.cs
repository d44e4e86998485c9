using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Students;
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

    public static string Manifest(object message) => message switch
    {
        SubmitRun => "R1",
        RunAccepted => "R2",
        RunRejected => "R3",
        GetRunStatus => "R4",
        RunStatusReport => "R5",
        EntityProgress => "R6",
        TeacherReady => "R7",
        StudentFinished => "R8",
        EntityFailed => "R9",
        StartEntity => "P1",
        RequestBatches => "P2",
        ReleaseBatches => "P3",
        LabelBatch => "P4",
        LabelledBatch => "P5",
        GetEntityStatus => "P6",
        EntityStatus => "P7",
        StopEntity => "P8",
        GradientChunk => "G1",
        RunSubmitted => "E1",
        RunTeacherReady => "E2",
        RunCompleted => "E3",
        RunFailed => "E4",
        CoordinatorSnapshot => "E5",
        EntityStarted => "E6",
        BatchStored => "E7",
        BatchesReleased => "E8",
        CheckpointWritten => "E9",
        EntitySnapshot => "E10",
        EntityFinished => "E11",
        _ => throw new ArgumentException($"{message.GetType().FullName} is not a ClusterDistill wire contract"),
    };

    public static byte[] Serialize(object message, long maxBytes = DefaultMaxMessageBytes)
    {
        var bytes = message switch
        {
            SubmitRun m => MessagePackSerializer.Serialize(m, Options),
            RunAccepted m => MessagePackSerializer.Serialize(m, Options),
            RunRejected m => MessagePackSerializer.Serialize(m, Options),
            GetRunStatus m => MessagePackSerializer.Serialize(m, Options),
            RunStatusReport m => MessagePackSerializer.Serialize(m, Options),
            EntityProgress m => MessagePackSerializer.Serialize(m, Options),
            TeacherReady m => MessagePackSerializer.Serialize(m, Options),
            StudentFinished m => MessagePackSerializer.Serialize(m, Options),
            EntityFailed m => MessagePackSerializer.Serialize(m, Options),
            StartEntity m => MessagePackSerializer.Serialize(m, Options),
            RequestBatches m => MessagePackSerializer.Serialize(m, Options),
            ReleaseBatches m => MessagePackSerializer.Serialize(m, Options),
            LabelBatch m => MessagePackSerializer.Serialize(m, Options),
            LabelledBatch m => MessagePackSerializer.Serialize(m, Options),
            GetEntityStatus m => MessagePackSerializer.Serialize(m, Options),
            EntityStatus m => MessagePackSerializer.Serialize(m, Options),
            StopEntity m => MessagePackSerializer.Serialize(m, Options),
            GradientChunk m => MessagePackSerializer.Serialize(m, Options),
            RunSubmitted m => MessagePackSerializer.Serialize(m, Options),
            RunTeacherReady m => MessagePackSerializer.Serialize(m, Options),
            RunCompleted m => MessagePackSerializer.Serialize(m, Options),
            RunFailed m => MessagePackSerializer.Serialize(m, Options),
            CoordinatorSnapshot m => MessagePackSerializer.Serialize(m, Options),
            EntityStarted m => MessagePackSerializer.Serialize(m, Options),
            BatchStored m => MessagePackSerializer.Serialize(m, Options),
            BatchesReleased m => MessagePackSerializer.Serialize(m, Options),
            CheckpointWritten m => MessagePackSerializer.Serialize(m, Options),
            EntitySnapshot m => MessagePackSerializer.Serialize(m, Options),
            EntityFinished m => MessagePackSerializer.Serialize(m, Options),
            _ => throw new ArgumentException($"{message.GetType().FullName} is not a ClusterDistill wire contract"),
        };
        if (bytes.Length > maxBytes)
            throw new WireException($"{message.GetType().Name} is {bytes.Length:N0} bytes, over the {maxBytes:N0}-byte message limit " +
                                    "(akka.remote maximum-frame-size / clusterdistill.wire.max-message-bytes): use a smaller batch or fp16 payloads");
        return bytes;
    }

    public static object Deserialize(ReadOnlyMemory<byte> bytes, string manifest, long maxBytes = DefaultMaxMessageBytes)
    {
        if (bytes.Length > maxBytes)
            throw new WireException($"message '{manifest}' of {bytes.Length:N0} bytes refused: over the {maxBytes:N0}-byte limit");
        try
        {
            object message = manifest switch
            {
                "R1" => MessagePackSerializer.Deserialize<SubmitRun>(bytes, Options),
                "R2" => MessagePackSerializer.Deserialize<RunAccepted>(bytes, Options),
                "R3" => MessagePackSerializer.Deserialize<RunRejected>(bytes, Options),
                "R4" => MessagePackSerializer.Deserialize<GetRunStatus>(bytes, Options),
                "R5" => MessagePackSerializer.Deserialize<RunStatusReport>(bytes, Options),
                "R6" => MessagePackSerializer.Deserialize<EntityProgress>(bytes, Options),
                "R7" => MessagePackSerializer.Deserialize<TeacherReady>(bytes, Options),
                "R8" => MessagePackSerializer.Deserialize<StudentFinished>(bytes, Options),
                "R9" => MessagePackSerializer.Deserialize<EntityFailed>(bytes, Options),
                "P1" => MessagePackSerializer.Deserialize<StartEntity>(bytes, Options),
                "P2" => MessagePackSerializer.Deserialize<RequestBatches>(bytes, Options),
                "P3" => MessagePackSerializer.Deserialize<ReleaseBatches>(bytes, Options),
                "P4" => MessagePackSerializer.Deserialize<LabelBatch>(bytes, Options),
                "P5" => MessagePackSerializer.Deserialize<LabelledBatch>(bytes, Options),
                "P6" => MessagePackSerializer.Deserialize<GetEntityStatus>(bytes, Options),
                "P7" => MessagePackSerializer.Deserialize<EntityStatus>(bytes, Options),
                "P8" => MessagePackSerializer.Deserialize<StopEntity>(bytes, Options),
                "G1" => MessagePackSerializer.Deserialize<GradientChunk>(bytes, Options),
                "E1" => MessagePackSerializer.Deserialize<RunSubmitted>(bytes, Options),
                "E2" => MessagePackSerializer.Deserialize<RunTeacherReady>(bytes, Options),
                "E3" => MessagePackSerializer.Deserialize<RunCompleted>(bytes, Options),
                "E4" => MessagePackSerializer.Deserialize<RunFailed>(bytes, Options),
                "E5" => MessagePackSerializer.Deserialize<CoordinatorSnapshot>(bytes, Options),
                "E6" => MessagePackSerializer.Deserialize<EntityStarted>(bytes, Options),
                "E7" => MessagePackSerializer.Deserialize<BatchStored>(bytes, Options),
                "E8" => MessagePackSerializer.Deserialize<BatchesReleased>(bytes, Options),
                "E9" => MessagePackSerializer.Deserialize<CheckpointWritten>(bytes, Options),
                "E10" => MessagePackSerializer.Deserialize<EntitySnapshot>(bytes, Options),
                "E11" => MessagePackSerializer.Deserialize<EntityFinished>(bytes, Options),
                _ => throw new WireException($"unknown manifest '{manifest}' ({bytes.Length} bytes): not a ClusterDistill contract, refused"),
            };
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
                case LabelBatch m: m.Images.Validate(maxBytes); break;
                case LabelledBatch m: m.Images.Validate(maxBytes); m.SoftLabels.Validate(maxBytes); break;
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
