using Distill.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Cluster.Tests;

[Collection(TorchLane.Name), TorchLane]
public sealed class ModelTests
{
    public ModelTests() => Torch.Init();

    private static long Params(nn.Module m) => m.parameters().Sum(p => p.numel());

    [Theory]
    // LeNet-5 as in the DAFL code: conv 1-6-16-120 (5x5), fc 120-84-10
    [InlineData("lenet5", 156 + 2416 + 48120 + 10164 + 850, 120)]
    // half: conv 1-3-8-60, fc 60-42-10
    [InlineData("lenet5-half", 78 + 608 + 12060 + 2562 + 430, 60)]
    [InlineData("hinton-1200", 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 12010, 1200)]
    [InlineData("hinton-800", 784 * 800 + 800 + 800 * 800 + 800 + 8010, 800)]
    public void Models_have_the_published_sizes_and_feature_widths(string arch, long parameters, long featureWidth)
    {
        var size = arch.StartsWith("lenet") ? 32 : 28;
        var m = ModelFactory.Create(arch, 1, size, 10);
        Assert.Equal(parameters, Params(m));
        m.eval();
        var (logits, features) = m.ForwardWithFeatures(randn(4, 1, size, size));
        Assert.Equal([4L, 10], logits.shape);
        Assert.Equal([4L, featureWidth], features.shape);
    }

    /// <summary>
    /// Parameter and state_dict key counts of the networks users bring teachers from, as their
    /// PyTorch definitions give them (the published counts: CIFAR ResNet-18 11.17M, WRN-40-2 2.24M,
    /// torchvision resnet18 11.69M and resnet50 25.56M with 1000 classes), and their feature widths.
    /// </summary>
    [Theory]
    [InlineData("resnet18", 10, 32, 11_173_962, 122, 512)]
    [InlineData("resnet34", 10, 32, 21_282_122, 218, 512)]
    [InlineData("resnet50", 10, 32, 23_520_842, 320, 2048)]
    [InlineData("wrn-16-1", 10, 32, 175_066, 82, 64)]
    [InlineData("wrn-16-2", 10, 32, 691_674, 83, 128)]
    [InlineData("wrn-40-1", 10, 32, 563_930, 226, 64)]
    [InlineData("wrn-40-2", 10, 32, 2_243_546, 227, 128)]
    [InlineData("vgg8-bn", 10, 32, 3_918_858, 37, 512)]
    [InlineData("vgg11-bn", 10, 32, 9_231_114, 58, 512)]
    [InlineData("torchvision-resnet18", 1000, 64, 11_689_512, 122, 512)]
    [InlineData("torchvision-resnet34", 1000, 64, 21_797_672, 218, 512)]
    [InlineData("torchvision-resnet50", 1000, 64, 25_557_032, 320, 2048)]
    public void Pytorch_architectures_have_their_published_sizes_and_state_dict_keys(string arch, int classes, int size, long parameters, int keys, long featureWidth)
    {
        using var m = ModelFactory.Create(arch, 3, size, classes);
        Assert.Equal(parameters, Params(m));
        Assert.Equal(keys, m.state_dict().Count);
        m.eval();
        using var _ = no_grad();
        // DeepInversion's hooks see every BatchNorm layer, in the order the forward pass reaches them
        using var stats = new BatchNormStatistics(m);
        var bns = m.modules().OfType<TorchSharp.Modules.BatchNorm2d>().Count();
        Assert.Equal(bns, stats.LayerCount);
        var (logits, features) = m.ForwardWithFeatures(randn(2, 3, size, size));
        Assert.Equal(bns, stats.Observed.Count);
        var firstBn = m.state_dict().First(kv => kv.Key.EndsWith("running_mean")).Value;
        Assert.Equal(firstBn.shape, stats.Observed[0].BatchMean.shape);
        Assert.Equal([2L, classes], logits.shape);
        Assert.Equal([2L, featureWidth], features.shape);
    }

    [Fact]
    public void Lenet_features_are_the_input_of_the_first_fully_connected_layer()
    {
        var m = ModelFactory.Create("lenet5", 1, 32, 10);
        m.eval();
        var x = randn(3, 1, 32, 32);
        var (logits, features) = m.ForwardWithFeatures(x);
        var fc1 = (TorchSharp.Modules.Linear)m.named_children().First(c => c.name == "fc1").module;
        var fc2 = (TorchSharp.Modules.Linear)m.named_children().First(c => c.name == "fc2").module;
        var again = fc2.call(nn.functional.relu(fc1.call(features)));
        Assert.True(again.allclose(logits));
    }

    [Fact]
    public void Wrong_input_shape_is_refused_with_the_expected_shape()
    {
        var m = ModelFactory.Create("lenet5", 1, 32, 10);
        var e = Assert.Throws<ArgumentException>(() => m.call(zeros(2, 1, 28, 28)));
        Assert.Contains("[N, 1, 32, 32]", e.Message);
        Assert.Contains("[2, 1, 28, 28]", e.Message);
    }

    [Fact]
    public void Unknown_architecture_lists_the_known_ones()
    {
        var e = Assert.Throws<ArgumentException>(() => ModelFactory.Create("vgg", 1, 32, 10));
        Assert.Contains("lenet5-half", e.Message);
    }

    [Fact]
    public void Dafl_generator_is_built_as_coded()
    {
        var g = new DaflGenerator(100, 32, 1, 128);
        var names = g.named_parameters().Select(p => p.name).ToHashSet();
        Assert.Contains("l1.weight", names);
        Assert.DoesNotContain("bnOut.weight", names);          // final BN has affine=False
        var bn1 = (TorchSharp.Modules.BatchNorm2d)g.named_children().First(c => c.name == "bn1").module;
        Assert.Equal([128L * 8 * 8, 100], g.named_parameters().First(p => p.name == "l1.weight").parameter.shape);
        g.train();
        var x = g.call(randn(16, 100));
        Assert.Equal([16L, 1, 32, 32], x.shape);
        // the affine-free output BN standardises each batch: mean ~0, std ~1
        Assert.True(Math.Abs(x.mean().item<float>()) < 1e-4);
        Assert.True(Math.Abs(x.std().item<float>() - 1) < 0.01);
        Assert.NotNull(bn1);
    }

    [Fact]
    public void Every_architecture_said_to_have_batchnorm_has_it_and_its_hooks_see_every_layer()
    {
        foreach (var arch in ModelFactory.Architectures)
        {
            using var scope = NewDisposeScope();
            using var m = ModelFactory.Create(arch, 3, 32, 10);
            var layers = m.modules().OfType<TorchSharp.Modules.BatchNorm2d>().Count();
            Assert.True(ModelFactory.HasBatchNorm(arch) == layers > 0, $"{arch}: {layers} BatchNorm2d layers, HasBatchNorm {ModelFactory.HasBatchNorm(arch)}");
            if (layers == 0) continue;
            m.eval();
            using var stats = new BatchNormStatistics(m);
            using (no_grad()) m.call(randn(2, 3, 32, 32));
            Assert.Equal(layers, stats.Observed.Count);
        }
    }

    [Fact]
    public void Batchnorm_hooks_report_batch_statistics_of_each_layer_input()
    {
        var m = ModelFactory.Create("resnet8", 1, 16, 10);
        m.eval();
        using var stats = new BatchNormStatistics(m);
        Assert.Equal(9, stats.LayerCount);   // stem + 3 blocks x 2 + 2 shortcut BNs
        var x = randn(5, 1, 16, 16) * 3 + 1;
        m.call(x);
        Assert.Equal(stats.LayerCount, stats.Observed.Count);
        // the stem BN sees the stem convolution's output; recompute it independently
        var stem = (Conv2dLayer)m.named_children().First(c => c.name == "conv1").module;
        var convOut = nn.functional.conv2d(x.to(float64), stem.Weight.to(float64), padding: [1, 1]);
        var first = stats.Observed[0];
        Assert.True(first.BatchMean.to(float64).allclose(convOut.mean([0, 2, 3]), 1e-4, 1e-4));
        Assert.True(first.BatchVar.to(float64).allclose(convOut.var([0, 2, 3], unbiased: false), 1e-4, 1e-4));
        // eval mode: the running statistics are not touched by the hooks
        Assert.True(first.RunningMean.eq(0).all().item<bool>());
        stats.Enabled = false;
        stats.Clear();
        m.call(x);
        Assert.Empty(stats.Observed);
    }

    [Fact]
    public void Weights_load_in_place_so_that_an_optimizer_on_the_module_keeps_training_it()
    {
        // The tensors an optimizer holds must stay the module's tensors after a checkpoint is loaded
        // (TorchSharp's own Module.load replaces them on a GPU; docs/gpu.md). Here the optimizer is
        // built first, then the saved weights are loaded, then one Adam step must move the loaded values.
        manual_seed(7);
        var saved = ModelFactory.Create("lenet5-half", 1, 32, 10);
        using var ms = new MemoryStream();
        saved.save(ms);
        manual_seed(8);
        var m = ModelFactory.Create("lenet5-half", 1, 32, 10);
        var before = m.parameters().ToArray();
        var opt = optim.Adam(m.parameters(), 0.01);
        ModuleState.Load(m, ms.ToArray());
        Assert.True(before.Zip(m.parameters()).All(p => ReferenceEquals(p.Item1, p.Item2)));
        foreach (var (a, b) in saved.parameters().Zip(m.parameters())) Assert.Equal(0f, (a - b).abs().max().item<float>());
        var loss = m.call(randn(4, 1, 32, 32)).sum();
        loss.backward();
        opt.step();
        var w = m.parameters().First();
        Assert.True((saved.parameters().First() - w).abs().max().item<float>() > 0);
        Assert.True((saved.parameters().First() - w).abs().max().item<float>() <= 0.0101f); // one Adam step of lr 0.01
    }

    [Fact]
    public void Weights_of_another_architecture_are_refused_naming_what_differs()
    {
        using var ms = new MemoryStream();
        ModelFactory.Create("lenet5", 1, 32, 10).save(ms);
        var half = ModelFactory.Create("lenet5-half", 1, 32, 10);
        var e = Assert.ThrowsAny<Exception>(() => ModuleState.Load(half, ms.ToArray()));
        Assert.Contains("shape", e.Message);
        var hinton = ModelFactory.Create("hinton-800", 1, 28, 10);
        var names = Assert.Throws<InvalidDataException>(() => ModuleState.Load(hinton, ms.ToArray()));
        Assert.Contains("another architecture", names.Message);
    }
}
