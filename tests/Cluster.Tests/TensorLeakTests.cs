using Cluster.Tests.Cluster;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// A long run's memory is flat only if every step frees what it made. Each registered method's
/// trainer, as the engine loop and the actors drive it, is stepped on this thread, and the tensors
/// this thread made and has not disposed (TorchSharp's per-thread count) must be as many after the
/// later steps as after the first ones. A temporary left to the finalizer counts as leaked even when
/// a collection happens to free it: the finalizer disposes it on its own thread. A leak of this kind
/// (the noise source's CPU draw) once grew `run --engine` by 2 MiB a step, to 17 GB.
/// </summary>
[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class TensorLeakTests
{
    public static IEnumerable<object[]> Methods() => MethodRegistry.Names.Select(n => new object[] { n });

    [Theory]
    [MemberData(nameof(Methods))]
    public void Should_leave_no_tensor_behind_a_step_of_any_method(string method)
    {
        var (m, spec, data, teacher) = Setup(method);
        using var _ = data;
        using var __ = teacher;
        using var student = NewStudent(spec, data);
        using var trainer = m.CreateTrainer(new MethodContext(spec, data, CPU, student, teacher));

        var live = new List<long>();
        while (!trainer.Done)
        {
            // metrics on some steps and not others, as a run asks for them
            trainer.TrainStep(trainer.Step % 3 == 0);
            live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        }
        AssertFlat(method, "step", live);
    }

    [Theory]
    [MemberData(nameof(Methods))]
    public void Should_leave_no_tensor_behind_a_batch_of_any_methods_source(string method)
    {
        // the source as the source entity drives it: unit after unit until a batch is made, then the
        // batch handed on and disposed
        var (m, spec, data, teacher) = Setup(method);
        using var _ = data;
        using var __ = teacher;
        using var source = m.CreateBatchSource(new SourceContext(spec, data, CPU, teacher, () => NewStudent(spec, data)));
        var live = new List<long>();
        for (var units = 0; live.Count < 8 && units < 1000; units++)
        {
            using var batch = source.Advance(units % 3 == 0);
            if (batch is not null) live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        }
        AssertFlat(method, "batch", live);
    }

    /// <summary>The method's tiny spec from the all-methods cluster test, its data, and a seeded random teacher where it has one (made here, not loaded).</summary>
    private static (MethodDefinition Method, RunSpec Spec, DataSplits Data, Classifier? Teacher) Setup(string method)
    {
        Torch.Init();
        var m = MethodRegistry.Get(method);
        var spec = SpecParser.Parse(AllMethodsProcessTests.TinySpec(m, "teacher.pt", "resnet8.pt"), $"{method}.yaml");
        var data = DataSplits.Load(spec.Data);
        manual_seed(11);
        var teacher = m.TeacherOf(spec) is { } t ? ModelFactory.Create(t.Arch, data.Channels, data.ImageSize, data.Classes) : null;
        return (m, spec, data, teacher);
    }

    private static Classifier NewStudent(RunSpec spec, DataSplits data)
    {
        manual_seed(spec.Seed);
        return ModelFactory.Create(spec.Student.Arch, data.Channels, data.ImageSize, data.Classes);
    }

    /// <summary>The first half of the counts warms up (optimiser moments, the first round of a pool); the second adds nothing.</summary>
    private static void AssertFlat(string method, string what, List<long> live)
    {
        Assert.True(live.Count >= 8, $"{method}: only {live.Count} of them");
        Assert.True(live[^1] == live[live.Count / 2 - 1],
            $"{method}: live tensors on this thread after each {what}: {string.Join(", ", live)}");
    }
}
