using System.Reflection;
using Distill.Engine.Native;
using Xunit.Sdk;

namespace Cluster.Tests;

/// <summary>
/// The test host computes with TorchSharp as a node does (Native/TorchThread): one computation at a
/// time, each under a <see cref="QuietCollections.Hold"/>. Why: TorchSharp hands libtorch raw
/// handles, so a collection that another thread starts during a call may finalize a temporary the
/// call is still reading (a CI run's test host died of it: a segfault in
/// <c>c10::TensorImpl::_fw_grad</c> on a pool thread, beside a process lane). A collection the
/// computing thread starts itself happens while it is in managed code, which is safe.
///
/// The in-process TorchSharp tests that run beside the process lanes are one collection whose
/// classes carry <see cref="TorchLaneAttribute"/>; the lanes' own TorchSharp work (the models they
/// save for their nodes) goes through <see cref="Run{T}"/>. The "mnist" collection runs alone.
/// </summary>
[CollectionDefinition(Name)]
public sealed class TorchLane
{
    public const string Name = "torch";

    private static readonly SemaphoreSlim Gate = new(1, 1);

    /// <summary>Computes alone, under a hold (a process lane's model for its nodes).</summary>
    public static T Run<T>(Func<T> compute)
    {
        Gate.Wait();
        try
        {
            using var hold = QuietCollections.Hold();
            return compute();
        }
        finally { Gate.Release(); }
    }

    internal static void Enter()
    {
        Gate.Wait();
        QuietCollections.Hold().Dispose();   // the region it renews is what the test needs
    }

    internal static void Leave() => Gate.Release();
}

/// <summary>Each test of the class computes alone, under a hold (<see cref="TorchLane"/>).</summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class TorchLaneAttribute : BeforeAfterTestAttribute
{
    public override void Before(MethodInfo methodUnderTest) => TorchLane.Enter();

    public override void After(MethodInfo methodUnderTest) => TorchLane.Leave();
}
