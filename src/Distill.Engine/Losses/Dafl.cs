using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Distill.Engine.Losses;

/// <summary>Paper definitions by default; the official code's and the seed's variants as options.</summary>
public enum OneHotLoss { CrossEntropy, L1 }
public enum ActivationNorm { Paper, Code }
public enum EntropyForm { Paper, Code, PerSample }

/// <summary>The generator's three losses in DAFL (SPEC.md §3).</summary>
public static class Dafl
{
    /// <summary>L_oh = (1/n) sum_i CE(y_T^i, argmax y_T^i); L1 variant: (1/n) sum_i ||softmax(y_T^i) - onehot(t^i)||_1.</summary>
    public static Tensor OneHot(Tensor teacherLogits, OneHotLoss form = OneHotLoss.CrossEntropy)
    {
        var pseudo = teacherLogits.argmax(1);
        if (form == OneHotLoss.CrossEntropy) return F.cross_entropy(teacherLogits, pseudo);
        var onehot = F.one_hot(pseudo, teacherLogits.shape[1]).to(teacherLogits.dtype);
        return (F.softmax(teacherLogits, 1) - onehot).abs().sum() / teacherLogits.shape[0];
    }

    /// <summary>
    /// L_a = -(1/n) sum_i ||f_T^i||_1 (paper). The code takes -mean |f| over samples and features,
    /// i.e. the paper's value divided by the feature width; alpha = 0.1 was tuned for that.
    /// </summary>
    public static Tensor Activation(Tensor features, ActivationNorm norm = ActivationNorm.Paper)
    {
        var flat = features.flatten(1);
        return norm == ActivationNorm.Paper ? -flat.abs().sum() / flat.shape[0] : -flat.abs().mean();
    }

    /// <summary>
    /// L_ie = -H_info(mean_i softmax(y_T^i)), H_info(p) = -(1/k) sum_j p_j ln p_j (paper).
    /// Code: sum_j p_j log10 p_j with no 1/k. PerSample (the seed's variant): -(1/n) sum_i H_info(softmax(y_T^i)).
    /// </summary>
    public static Tensor InformationEntropy(Tensor teacherLogits, EntropyForm form = EntropyForm.Paper)
    {
        var k = teacherLogits.shape[1];
        var p = F.softmax(teacherLogits, 1);
        switch (form)
        {
            case EntropyForm.Paper:
                {
                    var mean = p.mean([0]);
                    return mean.xlogy(mean).sum() / k;
                }
            case EntropyForm.Code:
                {
                    var mean = p.mean([0]);
                    return (mean.xlogy(mean) / Math.Log(10)).sum();
                }
            default:
                return p.xlogy(p).sum() / (k * p.shape[0]);
        }
    }
}
