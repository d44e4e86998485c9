using Distill.Engine.Models;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>
/// One method's training, advanced one step at a time so that a loop, a benchmark or an actor can
/// drive it. All state that matters (weights, optimiser moments, step, random generators, image
/// pool) goes through <see cref="SaveState"/>/<see cref="LoadState"/>, which checkpoints and the
/// divergence guard's rollbacks use.
/// </summary>
public interface IStepTrainer : IDisposable
{
    string Phase { get; }
    long Step { get; }
    long TotalSteps { get; }
    bool Done => Step >= TotalSteps;

    /// <summary>Model whose accuracy the phase reports.</summary>
    Classifier Model { get; }

    /// <summary>One step. Returns scalar metrics when asked (reading them synchronises a GPU).</summary>
    IReadOnlyDictionary<string, double>? TrainStep(bool wantMetrics);

    /// <summary>Images this method synthesises, for a sample grid (null for real-data methods).</summary>
    Tensor? Samples(int count);

    /// <summary>Multiplies every learning rate by factor (guard rollbacks).</summary>
    void ScaleLearningRates(double factor);

    /// <summary>The factor the student's scheduled learning rate is multiplied by (the guard's rollbacks lower it; every rate of the trainer shares it).</summary>
    double LrScale { get; }

    void SaveState(BinaryWriter writer);
    void LoadState(BinaryReader reader);
}
