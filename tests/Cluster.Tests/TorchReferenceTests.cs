using Distill.Engine.Pipeline;
using System.Text.Json;
using Distill.Engine.Losses;
using Distill.Engine.Methods;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// The engine against PyTorch: Fixtures/torch-reference.json holds values computed by
/// tools/torch_reference.py (PyTorch, float64, CPU, its built-in losses where one exists). Inputs and
/// weights are closed formulas evaluated here and there alike, so the fixture holds only results.
/// Models are checked in float64 (architecture and arithmetic, to 1e-9) and in float32 (the CPU
/// convolution path the engine really trains with, to 1e-4 of the largest value).
/// </summary>
[Collection(TorchLane.Name), TorchLane]
public sealed class TorchReferenceTests(ITestOutputHelper output)
{
    private static readonly Lazy<JsonElement> Reference = new(() =>
    {
        Torch.Init();
        var path = Path.Combine(AppContext.BaseDirectory, "Fixtures", "torch-reference.json");
        return JsonDocument.Parse(File.ReadAllText(path)).RootElement;
    });

    private static JsonElement Ref => Reference.Value;

    // Losses run in float64 here: the issue asks for 1e-5 relative; float64 holds to ~1e-15, so a
    // tolerance of 1e-10 also catches a float32 step hidden inside a float64 computation.
    private const double Float64Tolerance = 1e-10;

    private static readonly string[] Suffixes = ["weight", "bias", "running_mean", "running_var"];

    private static double[] Wave(long n, double a, double b)
    {
        var v = new double[n];
        for (var i = 0; i < n; i++) v[i] = Math.Sin(a * i + b);
        return v;
    }

    private static Tensor Inputs(long[] shape, double a = 0.37, double b = 0.1, double scale = 1.5) =>
        tensor(Wave(shape.Aggregate(1L, (x, y) => x * y), a, b).Select(v => scale * v).ToArray(), shape, float64);

    /// <summary>The same formula as torch_reference.py's fill(): a function of index, shape and name's last part.</summary>
    private static void Fill(nn.Module module)
    {
        using var _ = no_grad();
        var tensors = module.named_parameters().Select(p => (p.name, (Tensor)p.parameter))
            .Concat(module.named_buffers().Select(b => (b.name, b.buffer)));
        foreach (var (name, t) in tensors)
        {
            var suffix = name[(name.LastIndexOf('.') + 1)..];
            var kind = Array.IndexOf(Suffixes, suffix) + 1;
            if (kind == 0) continue;   // num_batches_tracked
            var dims = t.shape;
            var code = kind * 101 + dims.Select((d, k) => (k + 1) * 7 * d).Sum();
            var s = Wave(t.numel(), 0.713, 0.029 * code + 0.5);
            var v = suffix switch
            {
                "weight" when dims.Length >= 2 => s.Select(x => x * (1.7 / Math.Sqrt((double)t.numel() / dims[0]))),
                "weight" => s.Select(x => 1 + 0.2 * x),
                "running_var" => s.Select(x => 0.6 + 0.4 * x * x),
                _ => s.Select(x => 0.1 * x),
            };
            t.copy_(tensor(v.ToArray(), dims, float64));
        }
    }

    private static string[] Fingerprint(nn.Module module) =>
        module.named_parameters().Select(p => (p.name, p.parameter.shape))
            .Concat(module.named_buffers().Select(b => (b.name, b.buffer.shape)))
            .Select(p => (suffix: p.name[(p.name.LastIndexOf('.') + 1)..], p.shape))
            .Where(p => Suffixes.Contains(p.suffix))
            .Select(p => $"{p.suffix}[{string.Join(",", p.shape)}]").Order(StringComparer.Ordinal).ToArray();

    private static string[] Fingerprint(JsonElement parameters) =>
        parameters.EnumerateArray()
            .Select(p => $"{p[0].GetString()}[{string.Join(",", p[1].EnumerateArray().Select(d => d.GetInt64()))}]")
            .Order(StringComparer.Ordinal).ToArray();

    private static double[] Doubles(JsonElement e) => e.EnumerateArray().Select(v => v.GetDouble()).ToArray();

    private static double Item(Tensor t) => t.detach().to(float64).item<double>();

    private static double[] Values(Tensor t) => t.detach().to(float64).cpu().flatten().data<double>().ToArray();

    /// <summary>Compares every s-th element, as the fixture's probe() stored them.</summary>
    private double Probe(string what, JsonElement expected, Tensor actual, double tolerance)
    {
        var all = Values(actual);
        Assert.Equal(expected.GetProperty("numel").GetInt64(), all.LongLength);
        var stride = expected.GetProperty("stride").GetInt32();
        return Close(what, Doubles(expected.GetProperty("values")), all.Where((_, i) => i % stride == 0).ToArray(), tolerance);
    }

    /// <summary>max |a - e| &lt;= tolerance * max |e|; returns and logs the relative error.</summary>
    private double Close(string what, double[] expected, double[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        var scale = Math.Max(expected.Max(Math.Abs), 1e-12);
        var worst = 0.0;
        var at = 0;
        for (var i = 0; i < expected.Length; i++)
        {
            var err = Math.Abs(actual[i] - expected[i]);
            if (err > worst) (worst, at) = (err, i);
        }
        var rel = worst / scale;
        output.WriteLine($"{what}: max error {rel:E2} of max |value| {scale:G4}");
        Assert.True(rel <= tolerance, $"{what}: element {at} is {actual[at]:R}, PyTorch {expected[at]:R} (error {rel:E2} of the largest value, tolerance {tolerance:E0})");
        return rel;
    }

    private void Scalar(string what, double expected, double actual, double tolerance)
    {
        output.WriteLine($"{what}: {actual:R} vs PyTorch {expected:R}");
        Assert.True(Math.Abs(actual - expected) <= tolerance * Math.Abs(expected), $"{what}: {actual:R}, PyTorch {expected:R} (relative tolerance {tolerance:E0})");
    }

    public static TheoryData<int, bool> ClassifierCases()
    {
        var data = new TheoryData<int, bool>();
        for (var i = 0; i < 5; i++) { data.Add(i, true); data.Add(i, false); }
        return data;
    }

    [Theory]
    [MemberData(nameof(ClassifierCases))]
    public void Classifier_logits_features_and_gradients_match_pytorch(int index, bool float64Run)
    {
        var c = Ref.GetProperty("classifiers")[index];
        var arch = c.GetProperty("arch").GetString()!;
        var channels = c.GetProperty("channels").GetInt32();
        var size = c.GetProperty("size").GetInt32();
        var n = c.GetProperty("n").GetInt32();
        using var scope = NewDisposeScope();
        var model = ModelFactory.Create(arch, channels, size, 10);
        Assert.Equal(Fingerprint(c.GetProperty("parameters")), Fingerprint(model));
        model.to(float64);
        Fill(model);
        var dtype = float64Run ? float64 : float32;
        model.to(dtype);
        model.train(c.GetProperty("train").GetBoolean());
        var tol = float64Run ? 1e-9 : 1e-4;
        var label = $"{arch} {channels}x{size} {(float64Run ? "float64" : "float32")}";

        var x = Inputs([n, channels, size, size]).to(dtype).requires_grad_(true);
        var (logits, features) = model.ForwardWithFeatures(x);
        Close($"{label} logits", Doubles(c.GetProperty("logits")), Values(logits), tol);
        Close($"{label} features", Doubles(c.GetProperty("features")), Values(features), tol);
        var loss = (logits * Inputs(logits.shape, 0.53, 0.2, 1.0).to(dtype)).sum() + (features * Inputs(features.shape, 0.29, 0.4, 1.0).to(dtype)).sum();
        loss.backward();
        Probe($"{label} input gradient", c.GetProperty("input_grad"), x.grad!, tol);
        var first = c.GetProperty("first_weight").GetString()!;
        var weight = model.named_parameters().Single(p => p.name == first).parameter;
        Probe($"{label} {first} gradient", c.GetProperty("first_weight_grad"), weight.grad!, tol);
    }

    [Theory]
    [InlineData(0, true)]
    [InlineData(0, false)]
    [InlineData(1, true)]
    [InlineData(1, false)]
    public void Dafl_generator_matches_pytorch_in_training_mode(int index, bool float64Run)
    {
        var g = Ref.GetProperty("generators")[index];
        var width = g.GetProperty("width").GetInt32();
        var n = g.GetProperty("n").GetInt32();
        using var scope = NewDisposeScope();
        using var generator = new DaflGenerator(100, 32, 1, width);
        Assert.Equal(Fingerprint(g.GetProperty("parameters")), Fingerprint(generator));
        generator.to(float64);
        Fill(generator);
        var dtype = float64Run ? float64 : float32;
        generator.to(dtype);
        generator.train();
        var tol = float64Run ? 1e-9 : 1e-4;
        var label = $"generator width {width} {(float64Run ? "float64" : "float32")}";

        var z = Inputs([n, 100], 0.91, 0.3, 1.0).to(dtype).requires_grad_(true);
        var images = generator.call(z);
        Probe($"{label} images", g.GetProperty("output"), images, tol);
        (images * Inputs(images.shape, 0.53, 0.2, 1.0).to(dtype)).sum().backward();
        Probe($"{label} latent gradient", g.GetProperty("latent_grad"), z.grad!, tol);
        var last = generator.named_parameters().Single(p => p.name == "conv3.weight").parameter;
        Probe($"{label} last conv weight gradient", g.GetProperty("last_conv_weight_grad"), last.grad!, tol);
    }

    private static Tensor Loss(string name, JsonElement p, Tensor s, Tensor t, Tensor y)
    {
        string Form(string key = "form") => p.GetProperty(key).GetString()!;
        double Num(string key) => p.GetProperty(key).GetDouble();
        return name switch
        {
            "hinton" => Distillation.Hinton(s, t, y, Num("temperature"), Num("alpha")),
            "soft_cross_entropy" => Distillation.SoftCrossEntropy(s, t),
            "label_smoothing" => Distillation.LabelSmoothing(s, y, Num("epsilon")),
            "tfkd_reg" => Distillation.TfKdRegularization(s, y, Num("correct"), Num("temperature"), Num("alpha"),
                Form() == "power" ? Distillation.VirtualSoftening.Power : Distillation.VirtualSoftening.Code),
            "dafl_one_hot" => Dafl.OneHot(t, Form() == "l1" ? OneHotLoss.L1 : OneHotLoss.CrossEntropy),
            "dafl_activation" => Dafl.Activation(nn.functional.relu(s), Form("norm") == "paper" ? ActivationNorm.Paper : ActivationNorm.Code),
            "dafl_entropy" => Dafl.InformationEntropy(t, Form() switch { "paper" => EntropyForm.Paper, "code" => EntropyForm.Code, _ => EntropyForm.PerSample }),
            "competition" => Form() == "paper"
                ? DeepInversion.Competition(t, s, CompetitionForm.Paper)
                : DeepInversion.Competition(t, s, CompetitionForm.Code, Num("temperature")),
            _ => throw new InvalidDataException($"fixture names an unknown loss '{name}'"),
        };
    }

    [Fact]
    public void Every_loss_and_its_gradients_match_pytorch()
    {
        var cases = Ref.GetProperty("losses").EnumerateArray().ToArray();
        Assert.Equal(16, cases.Length);
        foreach (var c in cases)
        {
            using var scope = NewDisposeScope();
            var name = c.GetProperty("name").GetString()!;
            var p = c.GetProperty("params");
            var label = $"{name} {p.GetRawText()}";
            var s = Inputs([5, 10], 0.71, 0.2, 2.0).requires_grad_(true);
            var t = Inputs([5, 10], 0.43, 1.1, 3.0).requires_grad_(true);
            var y = tensor(Enumerable.Range(0, 5).Select(i => (long)((3 * i + 1) % 10)).ToArray());
            var value = Loss(name, p, s, t, y);
            Scalar(label, c.GetProperty("value").GetDouble(), value.item<double>(), Float64Tolerance);
            value.backward();
            Close($"{label} d/d student", Doubles(c.GetProperty("student_grad")), s.grad is null ? new double[50] : Values(s.grad), Float64Tolerance);
            Close($"{label} d/d teacher", Doubles(c.GetProperty("teacher_grad")), t.grad is null ? new double[50] : Values(t.grad), Float64Tolerance);
        }
    }

    [Fact]
    public void Image_priors_and_their_gradients_match_pytorch()
    {
        var cases = Ref.GetProperty("image_losses").EnumerateArray().ToArray();
        Assert.Equal(6, cases.Length);
        foreach (var c in cases)
        {
            using var scope = NewDisposeScope();
            var name = c.GetProperty("name").GetString()!;
            var shape = c.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
            var x = Inputs(shape, 0.83, 0.6, 1.2).requires_grad_(true);
            var value = name switch
            {
                "tv_paper" => DeepInversion.TotalVariationLoss(x, TotalVariation.Paper),
                "tv_code" => DeepInversion.TotalVariationLoss(x, TotalVariation.Code),
                "l2" => DeepInversion.L2(x),
                _ => throw new InvalidDataException($"fixture names an unknown image loss '{name}'"),
            };
            var label = $"{name} [{string.Join(",", shape)}]";
            Scalar(label, c.GetProperty("value").GetDouble(), value.item<double>(), Float64Tolerance);
            value.backward();
            Close($"{label} gradient", Doubles(c.GetProperty("grad")), Values(x.grad!), Float64Tolerance);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Deepinversion_and_adi_pixel_objectives_match_pytorch(bool float64Run)
    {
        using var scope = NewDisposeScope();
        var dtype = float64Run ? float64 : float32;
        var teacher = ModelFactory.Create("resnet8", 1, 32, 10);
        var student = ModelFactory.Create("lenet5-half", 1, 32, 10);
        foreach (var m in new[] { teacher, student })
        {
            m.to(float64);
            Fill(m);
            m.to(dtype);
            SourceTrainer.Freeze(m);
        }
        using var stats = new BatchNormStatistics(teacher);
        var tol = float64Run ? 1e-9 : 1e-4;
        foreach (var o in Ref.GetProperty("objectives").EnumerateArray().Where(o => o.GetProperty("name").GetString() is "deepinversion" or "adi"))
        {
            var adi = o.GetProperty("name").GetString() == "adi";
            var w = o.GetProperty("weights");
            var spec = new DeepInversionSpec
            {
                FeatureWeight = w.GetProperty("feature").GetDouble(),
                FirstBnWeight = w.GetProperty("first_bn").GetDouble(),
                TvWeight = w.GetProperty("tv").GetDouble(),
                L2Weight = w.GetProperty("l2").GetDouble(),
                CompetitionWeight = adi ? w.GetProperty("competition").GetDouble() : 0,
            };
            var targets = tensor(o.GetProperty("targets").EnumerateArray().Select(v => v.GetInt64()).ToArray());
            var x = Inputs([4, 1, 32, 32], 0.59, 0.9, 1.0).to(dtype).requires_grad_(true);
            var label = $"{(adi ? "ADI" : "DeepInversion")} {(float64Run ? "float64" : "float32")}";
            var (total, parts) = ImageSynthesizer.Objective(teacher, stats, adi ? student : null, x, targets, spec, TotalVariation.Paper, CompetitionForm.Paper);
            var expectedParts = o.GetProperty("parts");
            Assert.Equal(expectedParts.GetProperty("bn_layers").GetInt32(), stats.LayerCount);
            var scalarTol = float64Run ? 1e-9 : 1e-5;
            Scalar($"{label} total", o.GetProperty("value").GetDouble(), Item(total), scalarTol);
            Scalar($"{label} ce", expectedParts.GetProperty("ce").GetDouble(), Item(parts["ce"]), scalarTol);
            Scalar($"{label} r_feature", expectedParts.GetProperty("r_feature").GetDouble(), Item(parts["r_feature"]), scalarTol);
            if (adi) Scalar($"{label} r_compete", expectedParts.GetProperty("r_compete").GetDouble(), Item(parts["r_compete"]), scalarTol);
            total.backward();
            Probe($"{label} pixel gradient", o.GetProperty("grad"), x.grad!, tol);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Dafl_generator_objective_through_lenet5_matches_pytorch(bool float64Run)
    {
        var o = Ref.GetProperty("objectives").EnumerateArray().Single(e => e.GetProperty("name").GetString() == "dafl_generator_code");
        using var scope = NewDisposeScope();
        var dtype = float64Run ? float64 : float32;
        var teacher = ModelFactory.Create("lenet5", 1, 32, 10);
        teacher.to(float64);
        Fill(teacher);
        teacher.to(dtype);
        SourceTrainer.Freeze(teacher);
        var x = Inputs([6, 1, 32, 32], 0.47, 0.8, 1.3).to(dtype).requires_grad_(true);
        var (logits, features) = teacher.ForwardWithFeatures(x);
        var w = o.GetProperty("weights");
        // the three terms DaflSynthesizer.Synthesize adds, in the official code's forms
        var total = Dafl.OneHot(logits) + Dafl.Activation(features, ActivationNorm.Code) * w.GetProperty("activation").GetDouble()
                    + Dafl.InformationEntropy(logits, EntropyForm.Code) * w.GetProperty("entropy").GetDouble();
        var label = $"DAFL L_G {(float64Run ? "float64" : "float32")}";
        Scalar(label, o.GetProperty("value").GetDouble(), Item(total), float64Run ? 1e-9 : 1e-5);
        total.backward();
        Probe($"{label} pixel gradient", o.GetProperty("grad"), x.grad!, float64Run ? 1e-9 : 1e-4);
    }
}
