using Distill.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Distill.Engine.Losses;

public enum TotalVariation { Paper, Code }
public enum CompetitionForm { Paper, Code }

/// <summary>DeepInversion's image priors, feature regulariser and ADI's competition term (SPEC.md §4).</summary>
public static class DeepInversion
{
    /// <summary>
    /// Paper: R_TV = sum over pixels of sqrt((x[i,j-1]-x[i,j])^2 + (x[i+1,j]-x[i,j])^2), summed
    /// over channels and images (on the interior where both neighbours exist), divided by n.
    /// Code: ||d1|| + ||d2|| + ||d3|| + ||d4||, the L2 norms of the horizontal, vertical and both
    /// diagonal differences over the whole batch.
    /// </summary>
    public static Tensor TotalVariationLoss(Tensor images, TotalVariation form = TotalVariation.Paper)
    {
        if (images.dim() != 4) throw new ArgumentException($"images must be [N, C, H, W], got [{string.Join(", ", images.shape)}]");
        if (form == TotalVariation.Paper)
        {
            // left neighbour x[i, j-1] and lower neighbour x[i+1, j] of pixel (i, j), i < H-1, j >= 1
            var centre = images[.., .., ..^1, 1..];
            var left = images[.., .., ..^1, ..^1];
            var below = images[.., .., 1.., 1..];
            var sq = (left - centre).square() + (below - centre).square();
            // The +eps keeps the gradient finite where the image is flat (sqrt'(0) is infinite).
            return (sq + 1e-8).sqrt().sum() / images.shape[0];
        }
        var d1 = images[.., .., .., ..^1] - images[.., .., .., 1..];
        var d2 = images[.., .., ..^1, ..] - images[.., .., 1.., ..];
        var d3 = images[.., .., 1.., ..^1] - images[.., .., ..^1, 1..];
        var d4 = images[.., .., ..^1, ..^1] - images[.., .., 1.., 1..];
        return d1.norm() + d2.norm() + d3.norm() + d4.norm();
    }

    /// <summary>||x||_2 over the whole batch, as the code does.</summary>
    public static Tensor L2(Tensor images) => images.norm();

    /// <summary>
    /// R_feature = sum_l w_l (||mu_l - running_mean_l||_2 + ||sigma^2_l - running_var_l||_2),
    /// w_0 = firstLayerWeight (10 in the official code), w_l = 1 otherwise.
    /// </summary>
    public static Tensor FeatureRegulariser(IReadOnlyList<BatchNormObservation> layers, double firstLayerWeight = 1.0)
    {
        if (layers.Count == 0) throw new ArgumentException("no BatchNorm statistics were observed: did the teacher run with hooks enabled?");
        Tensor? total = null;
        for (var i = 0; i < layers.Count; i++)
        {
            var l = layers[i];
            var term = (l.BatchMean - l.RunningMean).norm() + (l.BatchVar - l.RunningVar).norm();
            if (i == 0 && firstLayerWeight != 1.0) term = term * firstLayerWeight;
            total = total is null ? term : total + term;
        }
        return total!;
    }

    /// <summary>
    /// ADI's competition: 1 - JS(p_T, p_S) with JS = (KL(p_T||M) + KL(p_S||M)) / 2, M = (p_T + p_S)/2,
    /// KL summed over classes and averaged over samples. Code form: softmax at T, clamp to
    /// [0.001, 1], the KLDivLoss argument order of the official code (KL(M||P) + KL(M||Q)) / 2,
    /// then 1 - clamp(JS, 0, 1).
    /// </summary>
    public static Tensor Competition(Tensor teacherLogits, Tensor studentLogits, CompetitionForm form = CompetitionForm.Paper, double temperature = 3.0)
    {
        Distillation.CheckPair(studentLogits, teacherLogits);
        if (form == CompetitionForm.Paper)
        {
            var pt = F.softmax(teacherLogits, 1);
            var ps = F.softmax(studentLogits, 1);
            var m = (pt + ps) * 0.5;
            var logM = m.log();
            var js = (Distillation.KlBatchMean(pt, logM) + Distillation.KlBatchMean(ps, logM)) * 0.5;
            return 1 - js;
        }
        var p = F.softmax(studentLogits / temperature, 1);
        var q = F.softmax(teacherLogits / temperature, 1);
        var mc = ((p + q) * 0.5).clamp(0.001, 1);
        p = p.clamp(0.001, 1);
        q = q.clamp(0.001, 1);
        var jsCode = (Distillation.KlBatchMean(mc, p.log()) + Distillation.KlBatchMean(mc, q.log())) * 0.5;
        return 1 - jsCode.clamp(0, 1);
    }
}
