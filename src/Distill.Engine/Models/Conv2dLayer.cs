using Distill.Engine.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Distill.Engine.Models;

/// <summary>
/// A 2-d convolution with the parameters, names and initialisation of nn.Conv2d (so checkpoints
/// are interchangeable), whose CPU backward avoids libtorch's oneDNN backward-data kernel.
/// That kernel returns wrong, often NaN, input gradients on the AVX-512 machines here
/// (<see cref="TorchRuntime"/>); switching oneDNN off entirely made convolutions ~40x slower. So on
/// the CPU the input gradient is written as a forward convolution, the kernel that is right: the
/// (zero-dilated, for stride > 1) output gradient convolved with the flipped, transposed kernel.
/// The weight gradient is libtorch's own (oneDNN's backward-weights kernel is exact here; computing
/// it as a forward correlation too, as session 1 did, made a paper-size DAFL step 1.5x slower).
/// Tests: Conv_gradients_match_float64_reference, TorchReferenceTests. CUDA uses cuDNN as is.
/// </summary>
public sealed class Conv2dLayer : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly Parameter? bias;
    private readonly long stride, padding;

    public Conv2dLayer(long inChannels, long outChannels, long kernel, long stride = 1, long padding = 0, bool hasBias = true)
        : base("Conv2d")
    {
        this.stride = stride;
        this.padding = padding;
        weight = new Parameter(empty(outChannels, inChannels, kernel, kernel));
        nn.init.kaiming_uniform_(weight, a: Math.Sqrt(5));   // nn.Conv2d's default
        if (hasBias)
        {
            var bound = 1 / Math.Sqrt(inChannels * kernel * kernel);
            bias = new Parameter(empty(outChannels));
            nn.init.uniform_(bias, -bound, bound);
        }
        RegisterComponents();
    }

    public Parameter Weight => weight;
    public Parameter? Bias => bias;

    public override Tensor forward(Tensor input)
    {
        if (input.device.type != DeviceType.CPU || !TorchRuntime.UseSafeConvolution)
            return F.conv2d(input, weight, bias, strides: [stride, stride], padding: [padding, padding]);
        if (!input.requires_grad)
        {
            // no input gradient wanted: libtorch's own weight gradient (oneDNN's, exact here)
            var y = CpuConv(input, weight, stride, padding, 1);
            return bias is null ? y : y + bias.view(1, -1, 1, 1);
        }
        // The weight gradient flows through libtorch's convolution as usual; InputGradient passes
        // the output through and replaces only the input gradient, the kernel that is wrong here.
        var output = InputGradient.apply(CpuConv(input.detach(), weight, stride, padding, 1), input, weight.detach(), stride, padding);
        return bias is null ? output : output + bias.view(1, -1, 1, 1);
    }

    /// <summary>
    /// oneDNN's CPU convolution, given input channels in whole blocks of 16 once there are more
    /// than 16: its kernels return wrong results here for counts with a remainder (60, 120, ...;
    /// AVX2 and AVX-512). Zero channels, added to input and kernel alike, leave the result
    /// unchanged. 1-16 channels were exact in 550 random shapes, so they are left as they are
    /// (padding an image's single channel to 16 tripled the cost of a LeNet step).
    /// </summary>
    internal static Tensor CpuConv(Tensor x, Tensor w, long stride, long padding, long dilation)
    {
        var c = x.shape[1];
        var rem = c % ChannelBlock;
        if (rem != 0 && c > ChannelBlock)
        {
            var extra = ChannelBlock - rem;
            x = F.pad(x, [0, 0, 0, 0, 0, extra]);
            w = F.pad(w, [0, 0, 0, 0, 0, extra]);
        }
        return F.conv2d(x.contiguous(), w.contiguous(), strides: [stride, stride], padding: [padding, padding], dilation: [dilation, dilation]);
    }

    private const long ChannelBlock = 16;

    /// <summary>
    /// Identity on a convolution's output (computed outside, with the weight's own gradient path);
    /// its backward adds the exact input gradient: the output gradient, zero-dilated for stride &gt; 1
    /// and explicitly padded, convolved with the flipped, transposed kernel (a forward convolution).
    /// </summary>
    private sealed class InputGradient : autograd.SingleTensorFunction<InputGradient>
    {
        public override string Name => "SafeConv2dInputGradient";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (y, x, w, stride, padding) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (long)vars[3], (long)vars[4]);
            ctx.save_for_backward([w]);
            ctx.save_data("stride", stride);
            ctx.save_data("padding", padding);
            ctx.save_data("h", x.shape[2]);
            ctx.save_data("w", x.shape[3]);
            return y.alias();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            var w = ctx.get_saved_variables()[0];
            var stride = (long)ctx.get_data("stride");
            var padding = (long)ctx.get_data("padding");
            var (h, wd) = ((long)ctx.get_data("h"), (long)ctx.get_data("w"));
            var (n, cout, k) = (grad.shape[0], w.shape[0], w.shape[2]);
            var g = grad;
            if (stride > 1)
            {
                // put the gradient back on the input grid: one value every stride pixels
                var (ho, wo) = (grad.shape[2], grad.shape[3]);
                g = zeros([n, cout, (ho - 1) * stride + 1, (wo - 1) * stride + 1], grad.dtype, grad.device);
                g[.., .., TensorIndex.Slice(null, null, stride), TensorIndex.Slice(null, null, stride)] = grad;
            }
            // when (H + 2p - k) is not a multiple of the stride, the last input rows/cols are
            // still read by the last window's far taps: extend the grid with zeros to reach them
            var padH = h - ((grad.shape[2] - 1) * stride + k - 2 * padding);
            var padW = wd - ((grad.shape[3] - 1) * stride + k - 2 * padding);
            // zeros padded explicitly: oneDNN's forward is also wrong when its own padding is
            // large next to the input (a 1x1 map padded by 4, LeNet's last layer)
            var full = k - 1 - padding;
            g = F.pad(g, [full, full + Math.Max(0, padW), full, full + Math.Max(0, padH)]);
            var gx = CpuConv(g, w.flip(2, 3).transpose(0, 1), 1, 0, 1);
            return [grad, gx, null!, null!, null!];
        }
    }
}
