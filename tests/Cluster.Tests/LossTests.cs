using Distill.Engine.Pipeline;
using Distill.Engine.Losses;
using TorchSharp;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// Every loss against values computed independently: plain double arithmetic over the same
/// numbers, written out from the definitions in SPEC.md, no TorchSharp involved.
/// </summary>
[Collection(TorchLane.Name), TorchLane]
public sealed class LossTests
{
    public LossTests() => Torch.Init();

    private static readonly double[][] Student = [[1.0, -0.5, 2.0, 0.3], [0.2, 0.1, -1.2, 0.7], [-0.4, 1.5, 0.0, 0.9]];
    private static readonly double[][] Teacher = [[2.5, 0.0, 1.0, -1.0], [-0.3, 0.4, 0.2, 1.9], [0.6, 2.2, -0.8, 0.1]];
    private static readonly long[] Labels = [2, 3, 1];

    private static Tensor T(double[][] rows) => tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length], float64);

    private static double[] Softmax(double[] z, double temperature = 1)
    {
        var m = z.Max();
        var e = z.Select(v => Math.Exp((v - m) / temperature)).ToArray();
        var s = e.Sum();
        return e.Select(v => v / s).ToArray();
    }

    private static double Kl(double[] p, double[] q) => p.Zip(q, (a, b) => a == 0 ? 0 : a * Math.Log(a / b)).Sum();

    private static double Ce(double[] z, long y) => -Math.Log(Softmax(z)[y]);

    private static void Close(double expected, double actual, double rel = 1e-5) =>
        Assert.True(Math.Abs(expected - actual) <= rel * Math.Max(1e-8, Math.Abs(expected)), $"expected {expected:R}, got {actual:R}");

    [Theory]
    [InlineData(1.0, 0.0)]
    [InlineData(4.0, 0.1)]
    [InlineData(20.0, 0.5)]
    public void Hinton_kd_is_alpha_ce_plus_t_squared_batchmean_kl(double t, double alpha)
    {
        var n = Student.Length;
        var kl = Enumerable.Range(0, n).Sum(i => Kl(Softmax(Teacher[i], t), Softmax(Student[i], t))) / n;
        var ce = Enumerable.Range(0, n).Sum(i => Ce(Student[i], Labels[i])) / n;
        var expected = alpha * ce + (1 - alpha) * t * t * kl;
        var actual = Distillation.Hinton(T(Student), T(Teacher), tensor(Labels), t, alpha).item<double>();
        Close(expected, actual);
    }

    [Fact]
    public void Kl_is_batchmean_not_divided_by_classes()
    {
        var p = new[] { 0.7, 0.2, 0.1, 0.0 };
        var q = new[] { 0.25, 0.25, 0.25, 0.25 };
        var expected = Kl(p, q);   // one sample: batchmean = the sum over classes
        var actual = Distillation.KlBatchMean(tensor(p, [1, 4], float64), tensor(q.Select(v => Math.Log(v)).ToArray(), [1, 4], float64)).item<double>();
        Close(expected, actual);
    }

    [Fact]
    public void Dafl_student_loss_is_soft_cross_entropy()
    {
        var n = Student.Length;
        var expected = Enumerable.Range(0, n).Sum(i =>
        {
            var pt = Softmax(Teacher[i]);
            var ls = Softmax(Student[i]).Select(v => Math.Log(v)).ToArray();
            return -pt.Zip(ls, (a, b) => a * b).Sum();
        }) / n;
        Close(expected, Distillation.SoftCrossEntropy(T(Student), T(Teacher)).item<double>());
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(3.0)]
    [InlineData(20.0)]
    public void Soft_target_loss_at_T_is_T2_cross_entropy_by_hand_and_hinton_plus_the_teachers_entropy(double t)
    {
        var n = Student.Length;
        var expected = Enumerable.Range(0, n).Sum(i =>
        {
            var pt = Softmax(Teacher[i], t);
            var ls = Softmax(Student[i], t).Select(v => Math.Log(v)).ToArray();
            return -pt.Zip(ls, (a, b) => a * b).Sum();
        }) / n * t * t;
        using var probs = TorchSharp.torch.nn.functional.softmax(T(Teacher) / t, 1);
        // the function the students train with (StudentTrainer.Loss calls it)
        Close(expected, StudentTrainer.Loss(T(Student), probs, t).item<double>());
        var entropy = Enumerable.Range(0, n).Sum(i => -Softmax(Teacher[i], t).Sum(p => p * Math.Log(p))) / n * t * t;
        Close(expected - entropy, Distillation.Hinton(T(Student), T(Teacher), null, t, 0).item<double>());
        Assert.Throws<ArgumentException>(() => Distillation.SoftTargetCrossEntropy(T(Student), probs.narrow(0, 0, 1), t));
    }

    [Fact]
    public void Label_smoothing_targets_one_minus_eps_plus_uniform()
    {
        const double eps = 0.1;
        var k = Student[0].Length;
        var expected = Enumerable.Range(0, Student.Length).Sum(i =>
        {
            var logp = Softmax(Student[i]).Select(v => Math.Log(v)).ToArray();
            return -Enumerable.Range(0, k).Sum(c => ((c == Labels[i] ? 1 - eps : 0) + eps / k) * logp[c]);
        }) / Student.Length;
        Close(expected, Distillation.LabelSmoothing(T(Student), tensor(Labels), eps).item<double>());
    }

    [Theory]
    [InlineData(Distillation.VirtualSoftening.Power)]
    [InlineData(Distillation.VirtualSoftening.Code)]
    public void Tf_kd_reg_uses_the_virtual_teacher(Distillation.VirtualSoftening softening)
    {
        const double a = 0.9, temp = 20, alpha = 0.3;
        var k = Student[0].Length;
        var n = Student.Length;
        double total = 0;
        for (var i = 0; i < n; i++)
        {
            var pv = Enumerable.Range(0, k).Select(c => c == Labels[i] ? a : (1 - a) / (k - 1)).ToArray();
            var soft = softening == Distillation.VirtualSoftening.Power ? Softmax(pv.Select(v => Math.Log(v)).ToArray(), temp) : Softmax(pv, temp);
            total += (1 - alpha) * Ce(Student[i], Labels[i]) + alpha * temp * temp * Kl(soft, Softmax(Student[i], temp));
        }
        var actual = Distillation.TfKdRegularization(T(Student), tensor(Labels), a, temp, alpha, softening).item<double>();
        Close(total / n, actual);
    }

    [Fact]
    public void Virtual_teacher_refuses_a_probability_below_uniform()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Distillation.VirtualTeacher(tensor(Labels), 4, 0.2));
        Assert.Contains("1/k", e.Message);
    }

    [Theory]
    [InlineData(OneHotLoss.CrossEntropy)]
    [InlineData(OneHotLoss.L1)]
    public void Dafl_one_hot_loss(OneHotLoss form)
    {
        var n = Teacher.Length;
        var expected = Enumerable.Range(0, n).Sum(i =>
        {
            var t = Array.IndexOf(Teacher[i], Teacher[i].Max());
            var p = Softmax(Teacher[i]);
            return form == OneHotLoss.CrossEntropy ? -Math.Log(p[t]) : p.Select((v, c) => Math.Abs(v - (c == t ? 1 : 0))).Sum();
        }) / n;
        Close(expected, Dafl.OneHot(T(Teacher), form).item<double>());
    }

    [Theory]
    [InlineData(ActivationNorm.Paper)]
    [InlineData(ActivationNorm.Code)]
    public void Dafl_activation_loss(ActivationNorm norm)
    {
        double[][] f = [[1.0, -2.0, 0.5], [0.0, 3.0, -1.5]];
        var l1 = f.Sum(r => r.Sum(Math.Abs));
        var expected = norm == ActivationNorm.Paper ? -l1 / 2 : -l1 / 6;
        Close(expected, Dafl.Activation(T(f), norm).item<double>());
    }

    [Theory]
    [InlineData(EntropyForm.Paper)]
    [InlineData(EntropyForm.Code)]
    [InlineData(EntropyForm.PerSample)]
    public void Dafl_information_entropy_loss(EntropyForm form)
    {
        var n = Teacher.Length;
        var k = Teacher[0].Length;
        var probs = Teacher.Select(r => Softmax(r)).ToArray();
        var mean = Enumerable.Range(0, k).Select(c => probs.Average(p => p[c])).ToArray();
        double expected = form switch
        {
            EntropyForm.Paper => mean.Sum(p => p * Math.Log(p)) / k,                       // -H_info(mean)
            EntropyForm.Code => mean.Sum(p => p * Math.Log10(p)),
            _ => probs.Sum(p => p.Sum(v => v * Math.Log(v)) / k) / n,                       // -(1/n) sum H_info
        };
        Close(expected, Dafl.InformationEntropy(T(Teacher), form).item<double>());
    }

    [Fact]
    public void Information_entropy_is_lowest_for_balanced_classes()
    {
        var balanced = Dafl.InformationEntropy(tensor(new double[] { 9, 0, 0, 9 }, [2, 2], float64)).item<double>();
        var skewed = Dafl.InformationEntropy(tensor(new double[] { 9, 0, 9, 0 }, [2, 2], float64)).item<double>();
        Close(-Math.Log(2) / 2, balanced, 1e-3);
        Assert.True(balanced < skewed);
    }

    [Fact]
    public void Total_variation_paper_and_code_forms()
    {
        // one image, 1 channel, 3x3, values chosen by hand
        double[,] x = { { 0, 1, 3 }, { 2, 2, 0 }, { 1, 4, 1 } };
        double paper = 0;
        for (var i = 0; i < 2; i++)            // rows with a row below
            for (var j = 1; j < 3; j++)        // columns with a column to the left
                paper += Math.Sqrt(Math.Pow(x[i, j - 1] - x[i, j], 2) + Math.Pow(x[i + 1, j] - x[i, j], 2) + 1e-8);
        double h = 0, v = 0, d1 = 0, d2 = 0;
        for (var i = 0; i < 3; i++) for (var j = 0; j < 2; j++) h += Math.Pow(x[i, j] - x[i, j + 1], 2);
        for (var i = 0; i < 2; i++) for (var j = 0; j < 3; j++) v += Math.Pow(x[i, j] - x[i + 1, j], 2);
        for (var i = 0; i < 2; i++) for (var j = 0; j < 2; j++) { d1 += Math.Pow(x[i + 1, j] - x[i, j + 1], 2); d2 += Math.Pow(x[i, j] - x[i + 1, j + 1], 2); }
        var code = Math.Sqrt(h) + Math.Sqrt(v) + Math.Sqrt(d1) + Math.Sqrt(d2);
        var t = tensor(x.Cast<double>().ToArray(), [1, 1, 3, 3], float64);
        Close(paper, DeepInversion.TotalVariationLoss(t, TotalVariation.Paper).item<double>());
        Close(code, DeepInversion.TotalVariationLoss(t, TotalVariation.Code).item<double>());
    }

    [Fact]
    public void Feature_regulariser_sums_l2_norms_with_first_layer_weight()
    {
        var obs = new List<Distill.Engine.Models.BatchNormObservation>
        {
            new("a", tensor(new double[] { 1, 2 }), tensor(new double[] { 1, 1 }), tensor(new double[] { 0, 0 }), tensor(new double[] { 1, 4 })),
            new("b", tensor(new double[] { 3 }), tensor(new double[] { 2 }), tensor(new double[] { 1 }), tensor(new double[] { 1 })),
        };
        var first = Math.Sqrt(1 + 4) + Math.Sqrt(0 + 9);
        var second = 2.0 + 1.0;
        Close(10 * first + second, DeepInversion.FeatureRegulariser(obs, 10).item<double>());
    }

    [Fact]
    public void Competition_is_one_minus_jensen_shannon()
    {
        var n = Student.Length;
        double js = 0;
        for (var i = 0; i < n; i++)
        {
            var pt = Softmax(Teacher[i]);
            var ps = Softmax(Student[i]);
            var m = pt.Zip(ps, (a, b) => (a + b) / 2).ToArray();
            js += (Kl(pt, m) + Kl(ps, m)) / 2;
        }
        Close(1 - js / n, DeepInversion.Competition(T(Teacher), T(Student)).item<double>());
        // identical distributions: JS = 0, the term is 1 (nothing to compete for)
        Close(1.0, DeepInversion.Competition(T(Teacher), T(Teacher)).item<double>());
    }

    [Fact]
    public void Competition_code_form_follows_the_official_code()
    {
        const double t = 3;
        var n = Student.Length;
        double js = 0;
        for (var i = 0; i < n; i++)
        {
            var p = Softmax(Student[i], t);
            var q = Softmax(Teacher[i], t);
            var m = p.Zip(q, (a, b) => Math.Clamp((a + b) / 2, 0.001, 1)).ToArray();
            var pc = p.Select(v => Math.Clamp(v, 0.001, 1)).ToArray();
            var qc = q.Select(v => Math.Clamp(v, 0.001, 1)).ToArray();
            js += 0.5 * m.Select((mv, c) => mv * (Math.Log(mv) - Math.Log(pc[c]))).Sum() + 0.5 * m.Select((mv, c) => mv * (Math.Log(mv) - Math.Log(qc[c]))).Sum();
        }
        Close(1 - Math.Clamp(js / n, 0, 1), DeepInversion.Competition(T(Teacher), T(Student), CompetitionForm.Code, t).item<double>());
    }

    [Fact]
    public void Mismatched_logits_are_refused_with_both_shapes()
    {
        var e = Assert.Throws<ArgumentException>(() => Distillation.Hinton(zeros(3, 10), zeros(3, 5), null, 4, 0));
        Assert.Contains("[3, 10]", e.Message);
        Assert.Contains("[3, 5]", e.Message);
    }
}
