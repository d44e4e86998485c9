using Distill.Engine.Pipeline;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>dafl.clamp_to_pixel_range: generated images stay within what normalised real pixels can be.</summary>
[Collection(TorchLane.Name), TorchLane]
public sealed class PixelRangeTests
{
    public PixelRangeTests() => Torch.Init();

    [Fact]
    public void Should_map_the_unit_pixel_interval_through_the_normalisation()
    {
        // MNIST: (0 - 0.1307) / 0.3081 and (1 - 0.1307) / 0.3081, by hand
        var r = PixelRange.Normalised([0.1307], [0.3081]);
        Assert.Equal(-0.424213, r.Low[0], 6);
        Assert.Equal(2.821487, r.High[0], 6);
        Assert.Throws<ArgumentException>(() => PixelRange.Normalised([0.5, 0.5], [0.25]));
    }

    [Fact]
    public void Should_keep_generated_images_in_the_pixel_range_and_still_train_the_generator()
    {
        var range = PixelRange.Normalised([0.1307], [0.3081]);
        var spec = new DaflSpec { Steps = 3, BatchSize = 32, GeneratorWidth = 8, GeneratorLr = 0.1, Activation = "code", Entropy = "code" };
        manual_seed(1);
        using var teacher = ModelFactory.Create("lenet5", 1, 32, 10);

        // as coded: the final BatchNorm's output (mean 0, std 1) goes below black
        using (var plain = new DaflSynthesizer(teacher, spec, CPU, seed: 2))
        using (var o = plain.Next(wantMetrics: false))
            Assert.True(o.Images.min().item<float>() < range.Low[0] - 0.5, "BatchNorm's output should reach well below black without the clamp");

        using var clamped = new DaflSynthesizer(teacher, spec with { ClampToPixelRange = true }, CPU, seed: 2, range);
        var before = clamped.Generator.parameters().Select(p => p.detach().clone()).ToList();
        for (var i = 0; i < spec.Steps; i++)
        {
            using var o = clamped.Next(wantMetrics: false);
            Assert.Equal((float)range.Low[0], o.Images.min().item<float>());
            Assert.True(o.Images.max().item<float>() <= (float)range.High[0]);
        }
        using (var grid = clamped.Samples(16)!)
            Assert.True(grid.min().item<float>() >= (float)range.Low[0] && grid.max().item<float>() <= (float)range.High[0]);
        // the teacher's gradient still reaches the generator through the pixels inside the range
        var changed = clamped.Generator.parameters().Zip(before).Count(x => !x.Item1.detach().allclose(x.Item2));
        Assert.True(changed > 0, "no generator parameter moved");
        foreach (var t in before) t.Dispose();

        // a range of the wrong channel count is refused, as is the option without a range
        Assert.Throws<ArgumentException>(() => new DaflSynthesizer(teacher, spec with { ClampToPixelRange = true }, CPU, 2));
        Assert.Throws<ArgumentException>(() => new DaflSynthesizer(teacher, spec with { ClampToPixelRange = true }, CPU, 2, PixelRange.Normalised([0.5, 0.5, 0.5], [0.2, 0.2, 0.2])));
    }
}
