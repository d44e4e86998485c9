using Distill.Engine.Methods;
using Distill.Engine.Training;
using static TorchSharp.torch;

namespace Distill.Engine.Pipeline;

/// <summary>The training set in shuffled batches (<see cref="Batches"/>), with their labels: the source of every method that learns from real data.</summary>
public sealed class RealDataSource(DataSplits data, int batchSize, Device device, long seed, Augmentation? augmentation) : IStepSource
{
    private readonly Batches batches = new(data.TrainX, data.TrainY, batchSize, device, seed, augmentation);

    public long Step { get; private set; }

    /// <summary>Batches in one pass over the training set (the last partial one is dropped).</summary>
    public long StepsPerEpoch => batches.StepsPerEpoch;

    public SourceBatch Next(bool wantMetrics)
    {
        var (x, y) = batches.Next();
        Step++;
        return new SourceBatch(x.DetachFromDisposeScope(), y.DetachFromDisposeScope(), null, null);
    }

    public Tensor? Samples(int count) => null;

    public void ScaleLearningRates(double factor) { }

    public bool CanRollBack => false;
    public void RollBack(BinaryReader checkpoint, double lrFactor) => throw new NotSupportedException("it learns nothing across batches");

    public void SaveState(BinaryWriter w)
    {
        StateIo.Tag(w, "real-data-source");
        w.Write(Step);
        batches.Save(w);
    }

    public void LoadState(BinaryReader r)
    {
        StateIo.Expect(r, "real-data-source");
        Step = r.ReadInt64();
        batches.Load(r);
    }

    public void Dispose() => batches.Dispose();
}
