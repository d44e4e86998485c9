using TorchSharp;
using static TorchSharp.torch;

namespace Distill.Engine.Training;

/// <summary>
/// Endless shuffled minibatches over in-memory tensors, reshuffled every epoch with its own
/// seeded generator (so a run is reproducible and its position can be saved and restored).
/// Batches are moved to the device (and augmented, when given); the caller's dispose scope owns them.
/// </summary>
public sealed class Batches : IDisposable
{
    private readonly Tensor images, labels;
    private readonly int batchSize;
    private readonly Device device;
    private readonly Generator generator;
    private readonly Augmentation? augmentation;
    private Tensor? order;
    private long cursor;

    public Batches(Tensor images, Tensor labels, int batchSize, Device device, long seed, Augmentation? augmentation = null)
    {
        if (images.shape[0] != labels.shape[0]) throw new ArgumentException("images and labels differ in count");
        if (images.shape[0] < batchSize) throw new ArgumentException($"batch size {batchSize} exceeds the {images.shape[0]} examples");
        this.images = images;
        this.labels = labels;
        this.batchSize = batchSize;
        this.device = device;
        generator = new Generator((ulong)seed);
        this.augmentation = augmentation;
    }

    public long Count => images.shape[0];

    /// <summary>Steps in one pass (the last partial batch is dropped, as drop_last=True).</summary>
    public long StepsPerEpoch => Count / batchSize;

    public (Tensor Images, Tensor Labels) Next()
    {
        if (order is null || cursor + batchSize > Count)
        {
            order?.Dispose();
            order = randperm(Count, generator: generator).DetachFromDisposeScope();
            cursor = 0;
        }
        // the selection and the unaugmented batch are freed here, not left to the finalizer: a loop
        // that allocates little managed memory collects rarely, and they held a batch each per step
        using var scope = NewDisposeScope();
        var idx = order[(int)cursor..(int)(cursor + batchSize)];
        cursor += batchSize;
        var x = images.index_select(0, idx).to(device);
        if (augmentation is not null) x = augmentation.Apply(x, generator);
        return (x.MoveToOuterDisposeScope(), labels.index_select(0, idx).to(device).MoveToOuterDisposeScope());
    }

    public void Save(BinaryWriter w)
    {
        w.Write(cursor);
        w.Write(order is not null);
        if (order is not null) Methods.StateIo.WriteTensor(w, order);
        Methods.StateIo.WriteGenerator(w, generator);
    }

    public void Load(BinaryReader r)
    {
        cursor = r.ReadInt64();
        order?.Dispose();
        order = r.ReadBoolean() ? Methods.StateIo.ReadTensor(r).DetachFromDisposeScope() : null;
        Methods.StateIo.ReadGenerator(r, generator);
    }

    public void Dispose()
    {
        order?.Dispose();
        generator.Dispose();
    }
}
