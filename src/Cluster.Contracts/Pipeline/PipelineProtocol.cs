using Cluster.Contracts.Tensors;
using MessagePack;

namespace Cluster.Contracts.Pipeline;

// Generator -> teacher -> student. The student pulls: it asks the generator for a window of
// sequence numbers and asks again only as batches are trained, so a fast generator never floods a
// slow student (credit-based backpressure that survives restarts, since it is driven by the
// student's persisted position).

/// <summary>Start (or confirm) an entity's part in a run. Idempotent: an entity started before keeps its state.</summary>
[MessagePackObject]
public sealed record StartEntity(
    [property: Key(0)] string EntityId,
    [property: Key(1)] string RunId,
    [property: Key(2)] string SpecYaml,
    [property: Key(3)] string? TeacherBlob,
    [property: Key(4)] long? HoldAt = null,   // a student trains up to this step and waits
    [property: Key(5)] Runs.ForkPoint? Fork = null) : IEntityMessage;   // the entity begins from these checkpoints (PBT's exploit)

/// <summary>
/// The student at ReplyTo wants batches FromSeq .. FromSeq+Count-1. DataEndpoint: its node's data
/// plane (host:port), where the batches go beside Akka.Remote; null sends them through Akka.
/// </summary>
[MessagePackObject]
public sealed record RequestBatches(
    [property: Key(0)] string EntityId,
    [property: Key(1)] long FromSeq,
    [property: Key(2)] int Count,
    [property: Key(3)] string ReplyTo,
    [property: Key(4)] string? DataEndpoint = null) : IEntityMessage;

/// <summary>All students (replicas) have a checkpoint covering every batch up to UpToSeq: the pool may drop them.</summary>
[MessagePackObject]
public sealed record ReleaseBatches(
    [property: Key(0)] string EntityId,
    [property: Key(1)] string Student,
    [property: Key(2)] long UpToSeq) : IEntityMessage;

/// <summary>
/// ADI: the student as it stands after StudentStep (the end of round Round - 1), for the generator
/// to synthesise round Round against. The weights travel through the shared blob store, not the
/// message, so a large student never meets the frame limit.
/// </summary>
[MessagePackObject]
public sealed record CompetitorReady(
    [property: Key(0)] string EntityId,
    [property: Key(1)] int Round,
    [property: Key(2)] long StudentStep,
    [property: Key(3)] string WeightsBlob) : IEntityMessage;

/// <summary>
/// Source to teacher: label this batch with the teacher's probabilities at Temperature and send it
/// on to ReplyTo, with its true labels (Labels) when the data has them.
/// </summary>
[MessagePackObject]
public sealed record LabelBatch(
    [property: Key(0)] string EntityId,
    [property: Key(1)] long Seq,
    [property: Key(2)] TensorPayload Images,
    [property: Key(3)] string ReplyTo,
    [property: Key(4)] TensorPayload? Labels = null,
    [property: Key(5)] double Temperature = 1) : IEntityMessage;

/// <summary>
/// To a student: a batch's images, the teacher's probabilities at Temperature when the method
/// uses them (SoftLabels), and the true labels when the data has them (Labels).
/// </summary>
[MessagePackObject]
public sealed record LabelledBatch(
    [property: Key(0)] string EntityId,
    [property: Key(1)] long Seq,
    [property: Key(2)] TensorPayload Images,
    [property: Key(3)] TensorPayload? SoftLabels,
    [property: Key(4)] double Temperature,
    [property: Key(5)] TensorPayload? Labels = null) : IEntityMessage;

/// <summary>Ask an entity for its state; answered with <see cref="EntityStatus"/>.</summary>
[MessagePackObject]
public sealed record GetEntityStatus([property: Key(0)] string EntityId) : IEntityMessage;

[MessagePackObject]
public sealed record EntityStatus(
    [property: Key(0)] string EntityId,
    [property: Key(1)] bool Started,
    [property: Key(2)] long Step,
    [property: Key(3)] long Seq,
    [property: Key(4)] int Queue,
    [property: Key(5)] int PoolBatches,
    [property: Key(6)] string Node,
    [property: Key(7)] string? Detail) : IWireMessage;

/// <summary>
/// The run paused (an ASHA rung): the entity passivates with its state in its journal, letting go
/// of its models and memory; the run's next StartEntity brings it back where it was.
/// </summary>
[MessagePackObject]
public sealed record PauseEntity([property: Key(0)] string EntityId) : IEntityMessage;

/// <summary>Which checkpoint the source wrote right after batch Seq (a run pausing there keeps it for forks). Answered with <see cref="CheckpointAt"/>.</summary>
[MessagePackObject]
public sealed record GetCheckpointAt([property: Key(0)] string EntityId, [property: Key(1)] long Seq) : IEntityMessage;

/// <summary>The source's checkpoint right after batch Seq, in its own store (null: none was written there).</summary>
[MessagePackObject]
public sealed record CheckpointAt([property: Key(0)] string EntityId, [property: Key(1)] long Seq, [property: Key(2)] string? Blob) : IWireMessage;

/// <summary>The run is over: the entity passivates and is not remembered any more.</summary>
[MessagePackObject]
public sealed record StopEntity([property: Key(0)] string EntityId) : IEntityMessage;
