using Distill.Engine.Native;
using Cluster.Seed.Commands;

// TorchSharp must be loadable before any engine type touches it (re-execs once on Debian 12).
NativeBootstrap.EnsureTorchLoadable();
return CommandLine.Dispatch(args, Console.Out, Console.Error);
