using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Distill.Engine.Models;

/// <summary>
/// The DAFL generator as the official code builds it: Linear(latent -> w*(s/4)^2) -> BN ->
/// x2 nearest upsample -> conv w, BN(eps 0.8), LeakyReLU(0.2) -> x2 upsample -> conv w/2, BN(eps 0.8),
/// LeakyReLU -> conv to image channels -> Tanh -> BN(affine=False). The code passes 0.8 as
/// BatchNorm2d's second positional argument, which is eps, not momentum; kept as coded.
/// Width w is 128 in the paper; the quick spec narrows it for CPU.
/// </summary>
public sealed class DaflGenerator : nn.Module<Tensor, Tensor>
{
    private readonly Linear l1;
    private readonly BatchNorm2d bn0, bn1, bn2, bnOut;
    private readonly Conv2dLayer conv1, conv2, conv3;
    private readonly int initSize, width;

    public DaflGenerator(int latentDim, int imageSize, int channels, int width = 128) : base("DaflGenerator")
    {
        if (imageSize % 4 != 0) throw new ArgumentException($"generator image size must be a multiple of 4, got {imageSize}");
        LatentDim = latentDim;
        this.width = width;
        initSize = imageSize / 4;
        l1 = Linear(latentDim, width * initSize * initSize);
        bn0 = BatchNorm2d(width);
        conv1 = new Conv2dLayer(width, width, 3, padding: 1);
        bn1 = BatchNorm2d(width, eps: 0.8);
        conv2 = new Conv2dLayer(width, width / 2, 3, padding: 1);
        bn2 = BatchNorm2d(width / 2, eps: 0.8);
        conv3 = new Conv2dLayer(width / 2, channels, 3, padding: 1);
        bnOut = BatchNorm2d(channels, affine: false);
        RegisterComponents();
    }

    public int LatentDim { get; }

    public override Tensor forward(Tensor z)
    {
        if (z.dim() != 2 || z.shape[1] != LatentDim)
            throw new ArgumentException($"generator expects latent [N, {LatentDim}], got [{string.Join(", ", z.shape)}]");
        var x = l1.call(z).view(z.shape[0], width, initSize, initSize);
        x = bn0.call(x);
        x = functional.interpolate(x, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest);
        x = functional.leaky_relu(bn1.call(conv1.call(x)), 0.2);
        x = functional.interpolate(x, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest);
        x = functional.leaky_relu(bn2.call(conv2.call(x)), 0.2);
        return bnOut.call(functional.tanh(conv3.call(x)));
    }
}
