using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Distill.Engine.Losses;

/// <summary>Knowledge-distillation losses on logits (SPEC.md §1, §2). Batch means throughout.</summary>
public static class Distillation
{
    /// <summary>KL(p || q) summed over classes, averaged over samples (PyTorch's 'batchmean').</summary>
    public static Tensor KlBatchMean(Tensor targetProbs, Tensor logProbs)
    {
        var n = logProbs.shape[0];
        // xlogy gives 0 * log 0 = 0 for classes the target never picks.
        return (targetProbs.xlogy(targetProbs) - targetProbs * logProbs).sum() / n;
    }

    /// <summary>
    /// Hinton KD: alpha * CE(y, p_S) + (1 - alpha) * T^2 * KL(p_T^T || p_S^T). With no labels
    /// (data-free) pass alpha = 0 and labels = null.
    /// </summary>
    public static Tensor Hinton(Tensor studentLogits, Tensor teacherLogits, Tensor? labels, double temperature, double alpha)
    {
        CheckPair(studentLogits, teacherLogits);
        if (temperature <= 0) throw new ArgumentOutOfRangeException(nameof(temperature), "temperature must be > 0");
        using var probs = F.softmax(teacherLogits / temperature, 1);
        return HintonFromProbabilities(studentLogits, probs, labels, temperature, alpha);
    }

    /// <summary>Hinton KD from the teacher's probabilities at T (what a teacher entity sends), the form students train with.</summary>
    public static Tensor HintonFromProbabilities(Tensor studentLogits, Tensor teacherProbs, Tensor? labels, double temperature, double alpha)
    {
        CheckPair(studentLogits, teacherProbs);
        if (temperature <= 0) throw new ArgumentOutOfRangeException(nameof(temperature), "temperature must be > 0");
        if (alpha < 0 || alpha > 1) throw new ArgumentOutOfRangeException(nameof(alpha), "alpha must be in [0, 1]");
        var soft = KlBatchMean(teacherProbs, F.log_softmax(studentLogits / temperature, 1)) * (temperature * temperature);
        if (alpha == 0) return soft * (1 - alpha);
        if (labels is null) throw new ArgumentException("alpha > 0 needs labels");
        return F.cross_entropy(studentLogits, labels) * alpha + soft * (1 - alpha);
    }

    /// <summary>
    /// DAFL's student loss: (1/n) sum_i H_cross(y_S, y_T) = -mean_i sum_c softmax(y_T) log softmax(y_S).
    /// It differs from KL(p_T || p_S) only by the teacher's entropy, so gradients are the same as
    /// the official code's KL form.
    /// </summary>
    public static Tensor SoftCrossEntropy(Tensor studentLogits, Tensor teacherLogits)
    {
        CheckPair(studentLogits, teacherLogits);
        using var probs = F.softmax(teacherLogits, 1);
        return SoftTargetCrossEntropy(studentLogits, probs, 1);
    }

    /// <summary>
    /// The loss every student trained on soft labels uses (DAFL at T = 1, DeepInversion's KD at T):
    /// T^2 * CE(p, softmax(s / T)) averaged over the batch, p the teacher's probabilities at T. It is
    /// T^2 KL(p || p_S^T) plus T^2 H(p), so its gradient is Hinton KD's with alpha = 0.
    /// </summary>
    public static Tensor SoftTargetCrossEntropy(Tensor studentLogits, Tensor teacherProbs, double temperature)
    {
        if (studentLogits.dim() != 2 || !studentLogits.shape.SequenceEqual(teacherProbs.shape))
            throw new ArgumentException($"student logits [{string.Join(", ", studentLogits.shape)}] and soft labels [{string.Join(", ", teacherProbs.shape)}] must both be [N, k]");
        if (temperature <= 0) throw new ArgumentOutOfRangeException(nameof(temperature), "temperature must be > 0");
        var logP = F.log_softmax(temperature == 1 ? studentLogits : studentLogits / temperature, 1);
        var ce = -(teacherProbs * logP).sum() / studentLogits.shape[0];
        return temperature == 1 ? ce : ce * (temperature * temperature);
    }

    /// <summary>Label smoothing: CE against (1 - eps) onehot(y) + eps / k.</summary>
    public static Tensor LabelSmoothing(Tensor logits, Tensor labels, double epsilon)
    {
        if (epsilon < 0 || epsilon >= 1) throw new ArgumentOutOfRangeException(nameof(epsilon), "epsilon must be in [0, 1)");
        var k = logits.shape[1];
        var target = F.one_hot(labels, k).to(logits.dtype) * (1 - epsilon) + epsilon / k;
        return -(target * F.log_softmax(logits, 1)).sum() / logits.shape[0];
    }

    /// <summary>Tf-KD's virtual teacher: probability a on the true class, (1 - a)/(k - 1) elsewhere.</summary>
    public static Tensor VirtualTeacher(Tensor labels, int classes, double correctProbability, ScalarType dtype = ScalarType.Float32)
    {
        if (correctProbability <= 1.0 / classes || correctProbability > 1)
            throw new ArgumentOutOfRangeException(nameof(correctProbability), $"must be in (1/k, 1], got {correctProbability}");
        var onehot = F.one_hot(labels, classes).to(dtype);
        return onehot * correctProbability + (1 - onehot) * ((1 - correctProbability) / (classes - 1));
    }

    /// <summary>How Tf-KD reg softens the virtual distribution at temperature T.</summary>
    public enum VirtualSoftening
    {
        /// <summary>p^(1/T), normalised: softmax(log p / T), the distribution a teacher with those probabilities gives at T.</summary>
        Power,
        /// <summary>The official code's softmax(p / T), treating the probabilities as logits.</summary>
        Code,
    }

    /// <summary>
    /// Tf-KD reg: (1 - alpha) * CE(y, p_S) + alpha * T^2 * KL(p_v^T || p_S^T).
    /// </summary>
    public static Tensor TfKdRegularization(Tensor studentLogits, Tensor labels, double correctProbability,
        double temperature, double alpha, VirtualSoftening softening = VirtualSoftening.Power)
    {
        var k = (int)studentLogits.shape[1];
        var virt = VirtualTeacher(labels, k, correctProbability, studentLogits.dtype);
        var softened = softening == VirtualSoftening.Power
            ? F.softmax(virt.log() / temperature, 1)
            : F.softmax(virt / temperature, 1);
        var kl = KlBatchMean(softened, F.log_softmax(studentLogits / temperature, 1)) * (temperature * temperature);
        return F.cross_entropy(studentLogits, labels) * (1 - alpha) + kl * alpha;
    }

    internal static void CheckPair(Tensor student, Tensor teacher)
    {
        if (student.dim() != 2 || !student.shape.SequenceEqual(teacher.shape))
            throw new ArgumentException(
                $"student and teacher logits must both be [N, k]; got [{string.Join(", ", student.shape)}] and [{string.Join(", ", teacher.shape)}]");
    }
}
