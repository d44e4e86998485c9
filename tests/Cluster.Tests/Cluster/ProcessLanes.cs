using Distill.Engine.Data;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The multi-process tests run in two lanes beside each other: most of their time is spent waiting
/// (failure detection, restarts, journal recovery), so two clusters at once share the two cores
/// well (their node processes get one libtorch thread each: ProcessCluster.OneThread). Within a lane
/// tests run one after another. Lane tests assert nothing that depends on TorchSharp's global
/// generator being left alone between a seed and its use, and compute nothing in the test host
/// that they compare with a node's numbers bit for bit; the "mnist" collection, whose tests do,
/// runs alone in a test host of its own beside this one (scripts/test.sh). Tests that keep both
/// cores busy on their own gain nothing here.
/// </summary>
public static class ProcessLanes
{
    public const string A = "process lane A";
    public const string B = "process lane B";
}

/// <summary>The MNIST files the nodes read, fetched once for both lanes before either starts a node.</summary>
public sealed class MnistFiles
{
    private static readonly Lazy<string> Dir = new(() => new DatasetCache(DatasetCache.DefaultRoot()).Ensure("mnist"), LazyThreadSafetyMode.ExecutionAndPublication);

    public MnistFiles() => _ = Dir.Value;
}

[CollectionDefinition(ProcessLanes.A)]
public sealed class ProcessLaneA : ICollectionFixture<MnistFiles>;

[CollectionDefinition(ProcessLanes.B)]
public sealed class ProcessLaneB : ICollectionFixture<MnistFiles>;
