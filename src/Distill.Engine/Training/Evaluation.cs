using TorchSharp;
using static TorchSharp.torch;

namespace Distill.Engine.Training;

public static class Evaluation
{
    /// <summary>Top-1 accuracy in percent over the whole set, in eval mode, without gradients.</summary>
    public static double Accuracy(nn.Module<Tensor, Tensor> model, Tensor images, Tensor labels, Device device, int batch = 1000)
    {
        var wasTraining = model.training;
        model.eval();
        long correct = 0;
        try
        {
            using var _ = no_grad();
            for (long i = 0; i < images.shape[0]; i += batch)
            {
                // one hold per batch: a whole test set is longer than the region's budget covers
                using var hold = Native.QuietCollections.Hold();
                using var scope = NewDisposeScope();
                var end = Math.Min(images.shape[0], i + batch);
                var x = images[(int)i..(int)end].to(device);
                var y = labels[(int)i..(int)end].to(device);
                correct += model.call(x).argmax(1).eq(y).sum().item<long>();
            }
        }
        finally { model.train(wasTraining); }
        return 100.0 * correct / images.shape[0];
    }

    /// <summary>Misclassified images behind an accuracy that <see cref="Accuracy"/> measured on `images` images (papers on MNIST count errors).</summary>
    public static long Errors(double accuracy, long images) => (long)Math.Round(images * (100.0 - accuracy) / 100.0);
}
