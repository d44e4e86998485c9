using Distill.Engine.Pipeline;
using Distill.Engine.Losses;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using Distill.Engine.Methods;
using TorchSharp;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// Gradients of the DAFL generator objective and of the DeepInversion pixel objective, against
/// central finite differences in float64 (independent of autograd).
/// </summary>
[Collection(TorchLane.Name), TorchLane]
public sealed class GradientTests
{
    public GradientTests() => Torch.Init();

    private static void CheckGradient(Tensor input, Func<Tensor, Tensor> objective, int probes, double tolerance)
    {
        var x = input.detach().clone().requires_grad_(true);
        objective(x).backward();
        var grad = x.grad!.clone().flatten();
        var flat = input.detach().clone().flatten();
        var rnd = new Random(7);
        const double h = 1e-6;
        for (var p = 0; p < probes; p++)
        {
            var i = rnd.Next((int)flat.shape[0]);
            using var _ = no_grad();
            var plus = flat.clone(); plus[i] += h;
            var minus = flat.clone(); minus[i] -= h;
            var fd = (objective(plus.view(input.shape)).item<double>() - objective(minus.view(input.shape)).item<double>()) / (2 * h);
            var ad = grad[i].item<double>();
            Assert.True(Math.Abs(fd - ad) <= tolerance * Math.Max(1e-3, Math.Abs(fd)), $"d/dx[{i}]: finite difference {fd:R}, autograd {ad:R}");
        }
    }

    [Theory]
    [InlineData(ActivationNorm.Paper, EntropyForm.Paper, OneHotLoss.CrossEntropy)]
    [InlineData(ActivationNorm.Code, EntropyForm.Code, OneHotLoss.CrossEntropy)]
    [InlineData(ActivationNorm.Paper, EntropyForm.PerSample, OneHotLoss.L1)]
    public void Dafl_generator_objective_gradient_matches_finite_differences(ActivationNorm a, EntropyForm e, OneHotLoss oh)
    {
        manual_seed(3);
        // logits and features as one input so both paths of L_G are differentiated
        var input = randn([6, 10 + 8], float64);
        Tensor Objective(Tensor v)
        {
            var logits = v[.., ..10];
            var features = functional_relu(v[.., 10..]);
            return Dafl.OneHot(logits, oh) + Dafl.Activation(features, a) * 0.1 + Dafl.InformationEntropy(logits, e) * 5;
        }
        CheckGradient(input, Objective, 30, 1e-5);
    }

    private static Tensor functional_relu(Tensor t) => nn.functional.relu(t);

    [Fact]
    public void Deepinversion_pixel_objective_gradient_matches_finite_differences()
    {
        manual_seed(5);
        var teacher = ModelFactory.Create("resnet8", 1, 8, 10);
        teacher.to(float64);
        // give the running statistics non-trivial values, as a trained teacher would have
        foreach (var (_, m) in teacher.named_modules())
            if (m is TorchSharp.Modules.BatchNorm2d bn)
            {
                bn.running_mean!.copy_(randn(bn.running_mean.shape, float64) * 0.1);
                bn.running_var!.copy_(rand(bn.running_var!.shape, float64) + 0.5);
            }
        SourceTrainer.Freeze(teacher);
        using var stats = new BatchNormStatistics(teacher);
        var spec = new DeepInversionSpec { TvWeight = 0.3, L2Weight = 0.05, FeatureWeight = 1, FirstBnWeight = 10 };
        var targets = tensor(new long[] { 0, 3, 7, 9 });
        var x = randn([4, 1, 8, 8], float64);
        CheckGradient(x, v => ImageSynthesizer.Objective(teacher, stats, null, v, targets, spec, TotalVariation.Paper, CompetitionForm.Paper).Total, 25, 1e-4);
    }

    [Fact]
    public void Adi_objective_gradient_includes_the_competition_term()
    {
        manual_seed(6);
        var teacher = ModelFactory.Create("resnet8", 1, 8, 10);
        var student = ModelFactory.Create("hinton-400", 1, 8, 10);
        teacher.to(float64);
        student.to(float64);
        SourceTrainer.Freeze(teacher);
        SourceTrainer.Freeze(student);
        using var stats = new BatchNormStatistics(teacher);
        var spec = new DeepInversionSpec { CompetitionWeight = 2, FeatureWeight = 0.5 };
        var targets = tensor(new long[] { 1, 2, 3 });
        var x = randn([3, 1, 8, 8], float64);
        CheckGradient(x, v => ImageSynthesizer.Objective(teacher, stats, student, v, targets, spec, TotalVariation.Code, CompetitionForm.Paper).Total, 20, 1e-4);
    }
}
