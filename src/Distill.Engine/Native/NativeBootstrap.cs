using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace Distill.Engine.Native;

/// <summary>
/// Makes TorchSharp loadable on hosts whose libstdc++ is older than GCC 13's (Debian 12).
/// The .NET host has loaded libstdc++ before Main runs, so the only fix that works from inside is
/// to build the shim (scripts/torch-native-env.sh) and re-exec this very process, same argv, with
/// the shim's folder first on LD_LIBRARY_PATH. execve keeps the PID, so signals, exit codes and
/// kill -9 behave as if the program had been started that way. Hosts that need nothing pay one
/// scan of /proc/self/maps.
/// </summary>
public static class NativeBootstrap
{
    private const string Marker = "CLUSTERDISTILL_NATIVE_REEXEC";
    private const string NeededVersion = "GLIBCXX_3.4.32";
    /// <summary>"off" in the container images: a libstdc++ without the symbol is an error there, never a compiler run.</summary>
    public const string BuildSwitch = "CLUSTERDISTILL_NATIVE_BUILD";

    /// <summary>
    /// Environment libtorch must see when it loads, which .NET cannot change for native code from
    /// inside (Environment.SetEnvironmentVariable does not reach libc's environ): MKL's conditional
    /// numerical reproducibility, the same bits whatever the thread count (the actors' runs must
    /// compute what the engine loop computes). A user's own value wins. glibc's allocator is tuned
    /// in-process, by <see cref="TorchRuntime"/> (mallopt), not here.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> LoadEnvironment = new Dictionary<string, string>
    {
        ["MKL_CBWR"] = "AUTO,STRICT",
    };

    /// <summary>Call first in Main. Returns only if the process can load TorchSharp as it is.</summary>
    public static void EnsureTorchLoadable()
    {
        if (!OperatingSystem.IsLinux()) return;
        var loaded = LoadedLibStdCxx();
        var needsShim = loaded is not null && !FileContains(loaded, NeededVersion);
        var needsEnv = LoadEnvironment.Keys.Any(k => Environment.GetEnvironmentVariable(k) is null);
        if (!needsShim && !needsEnv) return;
        if (Environment.GetEnvironmentVariable(Marker) == "1")
        {
            if (!needsShim) return;
            throw new InvalidOperationException(
                $"TorchSharp needs {NeededVersion}; {loaded} lacks it even after re-exec with the shim on LD_LIBRARY_PATH " +
                $"({Environment.GetEnvironmentVariable("LD_LIBRARY_PATH")}). Run scripts/torch-native-env.sh by hand to see why.");
        }
        if (needsShim && Environment.GetEnvironmentVariable(BuildSwitch) == "off")
        {
            // a program's first act: one line and exit 1, as for any other bad environment
            Console.Error.WriteLine($"error: TorchSharp needs {NeededVersion}, which {loaded} lacks, and building a compatibility shim is off here " +
                                    $"({BuildSwitch}=off, as in the container images): run on a base whose libstdc++ comes from GCC 13 or later (Debian 13, Ubuntu 24.04).");
            Environment.Exit(1);
        }
        if (needsShim)
        {
            var dir = BuildShim();
            var ld = Environment.GetEnvironmentVariable("LD_LIBRARY_PATH");
            Environment.SetEnvironmentVariable("LD_LIBRARY_PATH", string.IsNullOrEmpty(ld) ? dir : $"{dir}:{ld}");
        }
        foreach (var (k, v) in LoadEnvironment)
            if (Environment.GetEnvironmentVariable(k) is null) Environment.SetEnvironmentVariable(k, v);
        Environment.SetEnvironmentVariable(Marker, "1");
        ReExec();
    }

    /// <summary>The libstdc++ this process actually mapped (null if none, e.g. not yet loaded).</summary>
    public static string? LoadedLibStdCxx()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                var at = line.IndexOf('/');
                if (at < 0) continue;
                var path = line[at..];
                if (Path.GetFileName(path).StartsWith("libstdc++.so", StringComparison.Ordinal)) return path;
            }
        }
        catch (IOException) { }
        var fallback = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";
        return File.Exists(fallback) ? fallback : null;
    }

    private static bool FileContains(string path, string text)
    {
        var needle = Encoding.ASCII.GetBytes(text);
        var bytes = File.ReadAllBytes(path);
        return bytes.AsSpan().IndexOf(needle) >= 0;
    }

    private static string BuildShim()
    {
        var script = Path.Combine(AppContext.BaseDirectory, "scripts", "torch-native-env.sh");
        if (!File.Exists(script))
            throw new FileNotFoundException($"TorchSharp cannot load on this libstdc++ and the compat script is missing: {script}");
        var psi = new ProcessStartInfo("bash", [script]) { RedirectStandardOutput = true, UseShellExecute = false };
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("could not start bash for " + script);
        var output = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        if (p.ExitCode != 0 || output.Length == 0 || !File.Exists(Path.Combine(output, "libstdc++.so.6")))
            throw new InvalidOperationException($"{script} failed (exit {p.ExitCode}); TorchSharp cannot load on this host without it.");
        return output;
    }

    private static void ReExec()
    {
        var exe = File.ResolveLinkTarget("/proc/self/exe", returnFinalTarget: true)?.FullName
                  ?? Environment.ProcessPath ?? throw new InvalidOperationException("cannot find own executable");
        var argv = File.ReadAllText("/proc/self/cmdline").Split('\0', StringSplitOptions.None);
        if (argv.Length > 0 && argv[^1].Length == 0) argv = argv[..^1];
        var env = Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
            .Select(e => $"{e.Key}={e.Value}").ToArray();
        Console.Out.Flush();
        Console.Error.Flush();
        Exec(exe, [.. argv, null], [.. env, null]);
        throw new InvalidOperationException($"execve({exe}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    [DllImport("libc", EntryPoint = "execve", SetLastError = true)]
    private static extern int Exec(string path, string?[] argv, string?[] envp);
}
