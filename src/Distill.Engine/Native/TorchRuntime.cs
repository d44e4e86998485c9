using System.Runtime.InteropServices;
using TorchSharp;

namespace Distill.Engine.Native;

/// <summary>
/// Process-wide libtorch settings, applied once before any training: NNPACK off, MKL's dynamic
/// threading off (below) and glibc's allocator kept from returning memory (KeepFreedMemory).
///
/// On the AMD EPYC (AVX-512) machines here, libtorch 2.10's oneDNN convolution backward-data kernel
/// returns wrong input gradients (often NaN). oneDNN stays on, since switching it off made
/// convolutions ~40x slower; instead every model convolution is a Models/Conv2dLayer, which
/// computes the CPU input gradient itself and keeps libtorch's exact weight gradient
/// (ConvolutionTests checks both against a float64 reference). UseSafeConvolution says whether it
/// does; CLUSTERDISTILL_CONV_BACKWARD=native leaves the input gradient to libtorch on a host where
/// its kernel is known to be correct.
/// </summary>
public static class TorchRuntime
{
    private static readonly object Gate = new();
    private static bool initialised;

    /// <summary>Whether Conv2dLayer computes CPU input gradients itself.</summary>
    public static bool UseSafeConvolution { get; } =
        Environment.GetEnvironmentVariable("CLUSTERDISTILL_CONV_BACKWARD") != "native";

    public static void Initialize()
    {
        lock (Gate)
        {
            if (initialised) return;
            initialised = true;
            _ = torch.get_num_threads();   // makes TorchSharp load libtorch before we call into it
            ReproducibleMkl();
            try { SetUserEnabledNnpack(GlobalContext(), false); }
            catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
            {
                Console.Error.WriteLine($"[torch] note: could not switch NNPACK off ({e.Message})");
            }
            // MKL (linked into libtorch) may otherwise use fewer threads for a GEMM when other
            // threads of the process are busy, and a different thread count rounds differently:
            // the actors run the generator, teacher and student concurrently in one process and
            // must compute what the one-loop engine computes (MKL_CBWR is set on re-exec, too: NativeBootstrap)
            try { MklSetDynamic(0); }
            catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { }
            KeepFreedMemory();
        }
    }

    /// <summary>
    /// glibc hands blocks over 32 MiB (the cap of its mmap threshold) to mmap and unmaps them on
    /// free, and trims freed memory at the top of a heap back to the OS: every DAFL step then
    /// page-faults its large activations in afresh (batch 128 x 64 channels x 32 x 32 floats is
    /// 33.5 MB). Measured here: 4,000-13,000 minor faults and 35-95 ms of kernel time per step,
    /// steps of 93-209 ms that drifted from block to block; with no mmap for allocations and no
    /// trimming, 0-20 faults, ~5 ms of kernel time and a steady 89-97 ms (the page-fault churn
    /// that PyTorch users avoid with jemalloc, or the GPU with its caching allocator). The cost:
    /// freed memory stays in the process for reuse, so RSS is the peak working set. The one place
    /// the allocator is tuned, in-process, so that any host process (the test host too) gets it.
    /// A user's own MALLOC_*_ variables win; CLUSTERDISTILL_NO_MALLOC_TUNING=1 leaves glibc as it is.
    /// </summary>
    public static bool MallocTuned { get; private set; }

    private static void KeepFreedMemory()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("CLUSTERDISTILL_NO_MALLOC_TUNING") == "1") return;
        try
        {
            if (Environment.GetEnvironmentVariable("MALLOC_MMAP_MAX_") is null) Mallopt(MmapMax, 0);
            if (Environment.GetEnvironmentVariable("MALLOC_TRIM_THRESHOLD_") is null) Mallopt(TrimThreshold, int.MaxValue);
            // a thread's arena (the nodes' compute thread) grows its heap by what a request needs
            // and gives it back; a 64 MiB pad keeps it (without it that thread still faulted ~7,000 times a step)
            if (Environment.GetEnvironmentVariable("MALLOC_TOP_PAD_") is null) Mallopt(TopPad, 64 << 20);
            MallocTuned = true;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            // not glibc (musl): its allocator has no such knobs
        }
    }

    /// <summary>
    /// MKL's conditional numerical reproducibility, MKL_CBWR=AUTO,STRICT, in this process too: the
    /// programs get it from their environment on re-exec (<see cref="NativeBootstrap.LoadEnvironment"/>),
    /// but a host that does not re-exec (the test host under plain `dotnet test`, which runs the
    /// embedded cluster and the engine loop in process) would compute other last bits than the node
    /// processes it is compared with. Set before MKL's first call, which reads the environment
    /// variable only where nothing was set; a user's own MKL_CBWR wins.
    /// </summary>
    private static void ReproducibleMkl()
    {
        if (Environment.GetEnvironmentVariable("MKL_CBWR") is not null) return;
        try
        {
            var rc = MklCbwrSet(MklCbwrAuto | MklCbwrStrict);
            if (rc != 0) Console.Error.WriteLine($"[torch] note: could not set MKL's reproducibility mode in process (error {rc}); set MKL_CBWR={NativeBootstrap.LoadEnvironment["MKL_CBWR"]}");
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            Console.Error.WriteLine($"[torch] note: could not set MKL's reproducibility mode in process ({e.Message}); set MKL_CBWR={NativeBootstrap.LoadEnvironment["MKL_CBWR"]}");
        }
    }

    private const int MklCbwrAuto = 2, MklCbwrStrict = 0x10000;   // MKL_CBWR_AUTO, MKL_CBWR_STRICT in mkl_service.h

    /// <summary>What MKL_CBWR_Set does (libtorch links MKL statically and exports only this service entry): 0 on success, -8 once MKL has chosen its code path.</summary>
    [DllImport("libtorch_cpu", EntryPoint = "mkl_serv_cbwr_set")]
    private static extern int MklCbwrSet(int settings);

    /// <summary>MKL's reproducibility settings in effect (MKL_CBWR_Get(MKL_CBWR_ALL)), for the tests.</summary>
    public static int MklReproducibility() => MklCbwrGet(-1);

    [DllImport("libtorch_cpu", EntryPoint = "mkl_serv_cbwr_get")]
    private static extern int MklCbwrGet(int option);

    private const int TrimThreshold = -1, TopPad = -2, MmapMax = -4;   // M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX in malloc.h

    [DllImport("libc.so.6", EntryPoint = "mallopt")]
    private static extern int Mallopt(int param, int value);

    [DllImport("libtorch_cpu", EntryPoint = "MKL_Set_Dynamic")]   // the C entry (mkl_set_dynamic is the Fortran one, by reference)
    private static extern void MklSetDynamic(int enabled);

    [DllImport("libtorch_cpu", EntryPoint = "_ZN2at13globalContextEv")]
    private static extern IntPtr GlobalContext();

    [DllImport("libtorch_cpu", EntryPoint = "_ZN2at7Context20setUserEnabledNNPACKEb")]
    private static extern void SetUserEnabledNnpack(IntPtr context, [MarshalAs(UnmanagedType.U1)] bool enabled);

}
