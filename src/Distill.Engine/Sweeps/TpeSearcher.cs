namespace Distill.Engine.Sweeps;

/// <summary>
/// Tree-structured Parzen estimator (Bergstra et al., NeurIPS 2011), univariate, as Optuna's
/// default sampler: after `startup_trials` random configurations, the results so far are split into
/// the best `gamma` fraction (at most 25) and the rest; for each dimension a Parzen estimator is fit
/// to each part, `candidates` values are drawn from the good part's, and the one with the highest
/// ratio l(x)/g(x) is taken. Ranges are modelled in the space they are uniform in (log for
/// loguniform), integers on their grid of steps, lists as smoothed frequencies.
/// </summary>
public sealed class TpeSearcher(SweepSpec sweep) : Searcher(sweep)
{
    public override long? Total => Sweep.Search.Samples;

    public override TrialConfig? Suggest(long index, IReadOnlyList<Observation> observed)
    {
        if (index >= Total) return null;
        if (index < Sweep.Search.StartupTrials || observed.Count < 2) return Draw(index);
        var sorted = observed.OrderByDescending(o => o.Score).ToArray();
        var good = (int)Math.Clamp(Math.Ceiling(Sweep.Search.Gamma * sorted.Length), 1, Math.Min(25, sorted.Length - 1));
        var (l, g) = (sorted[..good], sorted[good..]);
        var rng = Rng(index, salt: 1);
        var values = new List<KeyValuePair<string, string>>();
        foreach (var d in Sweep.Space)
            values.Add(new(d.Path, d switch
            {
                RangeDimension r => Dimension.Number(r.FromInternal(BestContinuous(
                    l.Select(o => r.ToInternal(Num(o, d))).ToArray(), g.Select(o => r.ToInternal(Num(o, d))).ToArray(), r.InternalLow, r.InternalHigh, round: false, rng))),
                IntDimension i => (i.Low + (long)BestContinuous(
                    l.Select(o => (Num(o, d) - i.Low) / i.Step).ToArray(), g.Select(o => (Num(o, d) - i.Low) / i.Step).ToArray(), -0.5, i.Count - 0.5, round: true, rng) * i.Step)
                    .ToString(System.Globalization.CultureInfo.InvariantCulture),
                _ => BestCategorical(d.Values!, l.Select(o => o.Config[d.Path]).ToArray(), g.Select(o => o.Config[d.Path]).ToArray(), rng),
            }));
        return new TrialConfig(values);
    }

    private static double Num(Observation o, Dimension d) => double.Parse(o.Config[d.Path], System.Globalization.CultureInfo.InvariantCulture);

    private double BestContinuous(double[] good, double[] bad, double low, double high, bool round, Random rng)
    {
        var l = new Parzen(good, low, high);
        var g = new Parzen(bad, low, high);
        var best = double.NaN;
        var bestRatio = double.NegativeInfinity;
        for (var c = 0; c < Sweep.Search.Candidates; c++)
        {
            var x = l.Sample(rng);
            if (round) x = Math.Clamp(Math.Round(x), Math.Ceiling(low), Math.Floor(high));
            var ratio = l.LogDensity(x) - g.LogDensity(x);
            if (ratio > bestRatio) (best, bestRatio) = (x, ratio);
        }
        return best;
    }

    private string BestCategorical(IReadOnlyList<string> options, string[] good, string[] bad, Random rng)
    {
        // frequencies with a prior weight of 1 spread over the options
        double[] Weights(string[] seen) => options.Select(o => seen.Count(s => s == o) + 1.0 / options.Count).ToArray();
        var (wl, wg) = (Weights(good), Weights(bad));
        var (sl, sg) = (wl.Sum(), wg.Sum());
        var best = 0;
        var bestRatio = double.NegativeInfinity;
        for (var c = 0; c < Sweep.Search.Candidates; c++)
        {
            var u = rng.NextDouble() * sl;
            var k = 0;
            while (k < options.Count - 1 && u >= wl[k]) u -= wl[k++];
            var ratio = Math.Log(wl[k] / sl) - Math.Log(wg[k] / sg);
            if (ratio > bestRatio) (best, bestRatio) = (k, ratio);
        }
        return options[best];
    }

    /// <summary>
    /// A mixture of normals truncated to [low, high]: one per point, and a prior one over the whole
    /// range; each point's width is the larger gap to its neighbours (the bounds included), clipped
    /// to [range / min(100, n + 1), range].
    /// </summary>
    private sealed class Parzen
    {
        private readonly double[] mu, sigma;
        private readonly double low, high;

        public Parzen(double[] points, double low, double high)
        {
            (this.low, this.high) = (low, high);
            var range = high - low;
            var sorted = points.Order().ToArray();
            var minSigma = range / Math.Min(100.0, sorted.Length + 1);
            var mus = new List<double>();
            var sigmas = new List<double>();
            for (var i = 0; i < sorted.Length; i++)
            {
                var left = sorted[i] - (i == 0 ? low : sorted[i - 1]);
                var right = (i == sorted.Length - 1 ? high : sorted[i + 1]) - sorted[i];
                mus.Add(sorted[i]);
                sigmas.Add(Math.Clamp(Math.Max(left, right), minSigma, range));
            }
            mus.Add((low + high) / 2);
            sigmas.Add(range);
            (mu, sigma) = (mus.ToArray(), sigmas.ToArray());
        }

        public double Sample(Random rng)
        {
            var k = rng.Next(mu.Length);
            for (var attempt = 0; attempt < 100; attempt++)
            {
                var x = mu[k] + sigma[k] * Normal(rng);
                if (x >= low && x <= high) return x;
            }
            return Math.Clamp(mu[k], low, high);
        }

        public double LogDensity(double x)
        {
            var sum = 0.0;
            for (var k = 0; k < mu.Length; k++)
            {
                var mass = Phi((high - mu[k]) / sigma[k]) - Phi((low - mu[k]) / sigma[k]);
                var z = (x - mu[k]) / sigma[k];
                sum += Math.Exp(-0.5 * z * z) / (sigma[k] * Math.Sqrt(2 * Math.PI) * Math.Max(mass, 1e-12));
            }
            return Math.Log(Math.Max(sum / mu.Length, 1e-300));
        }

        private static double Normal(Random rng) =>
            Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

        /// <summary>The standard normal CDF (Abramowitz and Stegun 7.1.26, |error| below 1.5e-7).</summary>
        private static double Phi(double z)
        {
            var x = Math.Abs(z) / Math.Sqrt(2);
            var t = 1 / (1 + 0.3275911 * x);
            var erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.Exp(-x * x);
            return z >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
        }
    }
}
