using System.Collections.Concurrent;
using Akka.Actor;
using Cluster.Node.Configuration;
using Cluster.Node.Storage;
using Distill.Engine.Specs;
using Distill.Engine.Training;

namespace Cluster.Node.Hosting;

/// <summary>
/// What every actor on a node shares: options, the blob store, and datasets loaded once per process
/// (read-only tensors, so entities of several runs and systems can use them).
/// </summary>
public sealed class NodeServices(NodeOptions options)
{
    private static readonly ConcurrentDictionary<string, Lazy<DataSplits>> Datasets = new();

    public NodeOptions Options { get; } = options;
    public BlobStore Blobs { get; } = new(options.StoreDir);
    /// <summary>What the journal acknowledged, per persistent actor, kept beside the blobs (a journal that lost events is told apart from one that never had them).</summary>
    public JournalWitness Witness { get; } = new(options.StoreDir, options.Persistence.Described);
    public string NodeName { get; set; } = Environment.MachineName;

    /// <summary>Set once the shard regions and the coordinator proxy exist.</summary>
    public IActorRef Coordinator { get; set; } = ActorRefs.Nobody;
    public IActorRef Generators { get; set; } = ActorRefs.Nobody;
    public IActorRef Teachers { get; set; } = ActorRefs.Nobody;
    public IActorRef Students { get; set; } = ActorRefs.Nobody;
    /// <summary>How long the sweep coordinator takes from a trial's report to its decision journalled.</summary>
    public LatencyRecorder SweepDecisionTimes { get; } = new(100_000);

    /// <summary>The sweep coordinator singleton's proxy: trials' runs report to it.</summary>
    public IActorRef Sweeps { get; set; } = ActorRefs.Nobody;

    /// <summary>Batches and gradient chunks to other nodes (null: off, everything through Akka).</summary>
    public Transport.DataPlane? DataPlane { get; set; }
    /// <summary>The Cluster.Bootstrap contact point (with --discovery).</summary>
    public Http.BootstrapEndpoint? Bootstrap { get; set; }

    /// <summary>This node's data-plane endpoint, for peers to send bulk messages to.</summary>
    public string? DataEndpoint => DataPlane?.Endpoint;

    /// <summary>
    /// A batch or gradient chunk for a student entity: over the data plane to the node at endpoint
    /// (where the entity was when it said so; that node's region forwards it if it moved since, and
    /// this node's plane hands it straight to the region), or through the shard region when the
    /// endpoint is unknown.
    /// </summary>
    public void SendToStudent(Contracts.IEntityMessage message, string? endpoint)
    {
        if (DataPlane is { } plane && endpoint is not null) plane.Send(endpoint, message);
        else Students.Tell(message);
    }

    /// <summary>A gradient chunk for a peer replica, as <see cref="SendToStudent"/>: from the gradient itself over the data plane, else copied into a message.</summary>
    public void SendToStudent(Transport.GradientSlice slice, string? endpoint)
    {
        if (DataPlane is { } plane && endpoint is not null) plane.Send(endpoint, slice);
        else Students.Tell(slice.ToChunk());
    }

    public DataSplits Data(DataSpec spec) =>
        Datasets.GetOrAdd($"{spec.Name}|{spec.Path}|{spec.ImageSize}|{spec.TrainLimit}",
            _ => new Lazy<DataSplits>(() => DataSplits.Load(spec, Options.DataCache, TextWriter.Null))).Value;
}
