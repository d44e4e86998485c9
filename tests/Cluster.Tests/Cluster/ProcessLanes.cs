using Distill.Engine.Data;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The multi-process tests run in two lanes beside each other: most of their time is spent waiting
/// (failure detection, restarts, journal recovery), so two clusters at once share the two cores
/// well. Within a lane they run one after another. They need no in-process random state, unlike the
/// "mnist" collection, which runs alone after them.
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
