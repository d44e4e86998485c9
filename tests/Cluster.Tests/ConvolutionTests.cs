using Distill.Engine.Models;
using Distill.Engine.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// Regression tests for the CPU convolution workaround (Native/TorchRuntime.cs): on the AVX-512
/// machines here libtorch's oneDNN returns wrong input gradients and, for some channel counts,
/// wrong outputs. Conv2dLayer must match a float64 reference (computed by libtorch's plain
/// path, which oneDNN does not handle) on the model's shapes and on random ones.
/// </summary>
[Collection(TorchLane.Name), TorchLane]
public sealed class ConvolutionTests
{
    public ConvolutionTests() => Torch.Init();

    private static (double Y, double Dx, double Dw) Errors(Conv2dLayer layer, long n, long hw, long stride, long padding)
    {
        layer.zero_grad();
        var x = randn(n, layer.Weight.shape[1], hw, hw).requires_grad_(true);
        var y = layer.call(x);
        var w = randn(y.shape);
        (y * w).sum().backward();
        var xd = x.detach().to(float64).requires_grad_(true);
        var wd = layer.Weight.detach().to(float64).requires_grad_(true);
        var yd = nn.functional.conv2d(xd, wd, layer.Bias!.detach().to(float64), strides: [stride, stride], padding: [padding, padding]);
        (yd * w.to(float64)).sum().backward();
        static double Rel(Tensor a, Tensor b) => ((a.to(float64) - b).abs().max() / (b.abs().max() + 1e-12)).item<double>();
        double noGrad;
        using (no_grad()) noGrad = Rel(layer.call(x.detach()), yd);   // the labelling path: no autograd function
        return (Math.Max(Rel(y, yd), noGrad), Rel(x.grad!, xd.grad!), Rel(layer.Weight.grad!, wd.grad!));
    }

    [Theory]
    [InlineData(1, 6, 5, 1, 0, 32)]    // LeNet-5
    [InlineData(6, 16, 5, 1, 0, 14)]
    [InlineData(16, 120, 5, 1, 0, 5)]
    [InlineData(8, 60, 5, 1, 0, 5)]    // LeNet-5-half's last convolution: oneDNN got it wrong
    [InlineData(32, 16, 3, 1, 1, 32)]  // DAFL generator
    [InlineData(16, 1, 3, 1, 1, 32)]
    [InlineData(16, 32, 3, 2, 1, 16)]  // ResNet downsampling, even size
    [InlineData(16, 32, 1, 2, 0, 16)]  // ResNet shortcut
    [InlineData(4, 4, 3, 2, 1, 15)]
    [InlineData(64, 64, 3, 1, 1, 2)]   // small late-stage maps (ResNet-18/34 stage 4 on 28x28 inputs) and a 1x1 kernel
    [InlineData(128, 128, 3, 1, 1, 4)]
    [InlineData(32, 32, 3, 1, 1, 1)]
    [InlineData(20, 24, 1, 1, 0, 3)]
    public void Conv_gradients_match_float64_reference(int cin, int cout, int k, int stride, int padding, int hw)
    {
        manual_seed(cin * 100 + cout);
        var layer = new Conv2dLayer(cin, cout, k, stride, padding);
        for (var i = 0; i < 5; i++)
        {
            var (y, dx, dw) = Errors(layer, 32, hw, stride, padding);
            Assert.True(y < 1e-4 && dx < 1e-4 && dw < 1e-4, $"relative errors: output {y:G3}, input grad {dx:G3}, weight grad {dw:G3}");
        }
    }

    [Fact]
    public void Conv_matches_reference_on_random_shapes()
    {
        var rnd = new Random(11);
        for (var t = 0; t < 40; t++)
        {
            using var scope = NewDisposeScope();
            int cin = t % 2 == 0 ? rnd.Next(1, 18) : rnd.Next(1, 70), cout = rnd.Next(1, 70), k = new[] { 1, 3, 5 }[rnd.Next(3)], s = rnd.Next(1, 3);
            var p = Math.Min(rnd.Next(0, 3), k - 1);
            var hw = rnd.Next(k + 2, 30);
            var n = rnd.Next(1, 40);
            var (y, dx, dw) = Errors(new Conv2dLayer(cin, cout, k, s, p), n, hw, s, p);
            Assert.True(y < 1e-4 && dx < 1e-4 && dw < 1e-4,
                $"n={n} cin={cin} cout={cout} k={k} s={s} p={p} hw={hw}: output {y:G3}, input grad {dx:G3}, weight grad {dw:G3}");
        }
    }

    [Fact]
    public void Conv_layer_has_conv2d_parameter_names_and_init_range()
    {
        var layer = new Conv2dLayer(6, 16, 5);
        Assert.Equal(["weight", "bias"], layer.named_parameters().Select(p => p.name).ToArray());
        var bound = 1 / Math.Sqrt(6 * 25);
        Assert.True(layer.Weight.abs().max().item<float>() <= bound + 1e-6);   // kaiming_uniform(a=sqrt 5) = U(-1/sqrt(fan_in), ..)
        Assert.True(TorchRuntime.UseSafeConvolution);
    }
}
