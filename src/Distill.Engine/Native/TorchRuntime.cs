using System.Runtime.InteropServices;
using TorchSharp;

namespace Distill.Engine.Native;

/// <summary>
/// Process-wide libtorch settings, applied once before any training.
///
/// oneDNN (mkldnn) is switched off for CPU convolutions: on the AMD EPYC (AVX-512) machines here,
/// libtorch 2.10's oneDNN convolution backward-data kernel returns wrong input gradients, often
/// NaN, in 10-90% of calls (1 or 2 threads); LeNet-5 training diverged to NaN and every DAFL run
/// did within ~30 steps. The native im2col path is exact (see the regression test
/// Conv_input_gradient_matches_transposed_convolution). TorchSharp has no switch for it, so
/// at::globalContext().setUserEnabledMkldnn(false) is called directly (NNPACK likewise). Set
/// CLUSTERDISTILL_ALLOW_MKLDNN=1 to keep oneDNN on a host where it is known to be correct.
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
            try { SetUserEnabledNnpack(GlobalContext(), false); }
            catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
            {
                Console.Error.WriteLine($"[torch] note: could not switch NNPACK off ({e.Message})");
            }
            // MKL (linked into libtorch) may otherwise use fewer threads for a GEMM when other
            // threads of the process are busy, and a different thread count rounds differently:
            // the actors run the generator, teacher and student concurrently in one process and
            // must compute what the one-loop engine computes (MKL_CBWR is set on re-exec, too)
            try { MklSetDynamic(0); }
            catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { }
        }
    }

    [DllImport("libtorch_cpu", EntryPoint = "MKL_Set_Dynamic")]   // the C entry (mkl_set_dynamic is the Fortran one, by reference)
    private static extern void MklSetDynamic(int enabled);

    [DllImport("libtorch_cpu", EntryPoint = "_ZN2at13globalContextEv")]
    private static extern IntPtr GlobalContext();

    [DllImport("libtorch_cpu", EntryPoint = "_ZN2at7Context20setUserEnabledNNPACKEb")]
    private static extern void SetUserEnabledNnpack(IntPtr context, [MarshalAs(UnmanagedType.U1)] bool enabled);

}
