using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Akka.Actor;
using Akka.Configuration;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Serialization;
using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;
using Cluster.Node.Actors;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Cluster.Node.Transport;
using Distill.Engine.Methods;
using Distill.Engine.Pipeline;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Seed.Benchmarks;

/// <summary>The actor pipeline against the bare engine loop on the same DAFL workload, and the compute thread's share of the machine.</summary>
public static partial class ClusterBench
{
    private sealed record Segment(double ImagesPerSecond, double ComputeBusy, double OtherCores, double Wakeups, double Preempted);

    private static readonly DaflSpec Dafl = new()
    {
        Steps = 360, BatchSize = Batch, GeneratorWidth = 32, GeneratorLr = 0.02, Activation = "code", Entropy = "code", EvalEvery = 100_000,
    };

    /// <summary>EngineLoop's step split into its generator and student halves, each its own compute job.</summary>
    private static async Task<double> EngineAsJobs(int warm, int steps, TextWriter log)
    {
        var torch = Distill.Engine.Native.TorchThread.Shared;
        var (teacher, student, synth, trainer) = await torch.Run(() =>
        {
            Distill.Engine.Native.TorchRuntime.Initialize();
            var t = Teacher();
            manual_seed(2);
            var s = ModelFactory.Create("lenet5-half", 1, 32, 10);
            var dafl = Dafl with { Steps = steps };
            return (t, s, new DaflSynthesizer(t, dafl, CPU, 3), new StudentTrainer(s, new TrainSpec { Lr = 0.002 }, steps));
        });
        var sw = new Stopwatch();
        var gc0 = Heap.Now();
        for (var i = 0; i < steps; i++)
        {
            if (i == warm)
            {
                sw.Start();
                gc0 = Heap.Now();
            }
            var (o, probs) = await torch.Run(() =>
            {
                var batch = synth.Next(false);
                return (batch, SoftLabels.FromLogits(batch.TeacherLogits!, 1));
            });
            await torch.Run(() =>
            {
                using (o) using (probs) trainer.TrainStep(o.Images, probs, 1, false);
                return 0;
            });
        }
        var ips = (steps - warm) * Batch / sw.Elapsed.TotalSeconds;
        var gc = Heap.Now().Since(gc0, steps - warm);
        await torch.Run(() => { synth.Dispose(); trainer.Dispose(); student.Dispose(); teacher.Dispose(); return 0; });
        log.WriteLine($"[bench] engine halves as separate jobs: {ips:F0} images/s; {gc}");
        return ips;
    }

    private static double EngineLoop(int warm, int steps, TextWriter log)
    {
        Distill.Engine.Native.TorchRuntime.Initialize();
        using var teacher = Teacher();
        manual_seed(2);
        using var student = ModelFactory.Create("lenet5-half", 1, 32, 10);
        using var trainer = new DaflTrainer(teacher, student, Dafl with { Steps = steps }, new TrainSpec { Lr = 0.002 }, CPU, 3);
        for (var i = 0; i < warm; i++) trainer.TrainStep(false);
        var gc0 = Heap.Now();
        var sw = Stopwatch.StartNew();
        for (var i = warm; i < steps; i++) trainer.TrainStep(false);
        var ips = (steps - warm) * Batch / sw.Elapsed.TotalSeconds;
        log.WriteLine($"[bench] engine loop: {ips:F0} images/s; {Heap.Now().Since(gc0, steps - warm)}");
        return ips;
    }

    /// <summary>An embedded one-node cluster that runs the bench's DAFL spec as a new run per segment.</summary>
    private sealed class PipelineBench : IDisposable
    {
        private readonly string dir;
        private readonly ClusterNode node;
        private readonly Cluster.Node.Http.NodeHttpServer? http;

        private PipelineBench(string dir, ClusterNode node, Cluster.Node.Http.NodeHttpServer? http)
        {
            this.dir = dir;
            this.node = node;
            this.http = http;
        }

        public static async Task<PipelineBench> StartAsync(TextWriter log, int? httpPort)
        {
            var dir = Path.Combine(Path.GetTempPath(), $"cd-bench-{Guid.NewGuid():N}");
            Directory.CreateDirectory(dir);
            using (var t = Teacher()) t.save(Path.Combine(dir, "teacher.pt"));
            var options = new NodeOptions
            {
                Persistence = PersistenceOptions.Sqlite(Path.Combine(dir, "journal.db")),
                StoreDir = Path.Combine(dir, "blobs"), RunsDir = Path.Combine(dir, "runs"), LogLevel = "WARNING",
            };
            log.WriteLine($"[bench] embedded node in {dir}");
            var node = await ClusterNode.StartAsync(options);
            Cluster.Node.Http.NodeHttpServer? http = null;
            if (httpPort is { } port)
            {
                var token = Cluster.Node.Http.ApiToken.ForServer(null);
                http = await Cluster.Node.Http.NodeHttpServer.StartAsync("127.0.0.1", port, () => ClusterNode.NotReady(node),
                    web => Cluster.Node.Http.ControlApi.Map(web, token, () => node, options));
                log.WriteLine($"[bench] API, dashboard and /metrics at {http.Address} (token from {token.Source})");
            }
            return new PipelineBench(dir, node, http);
        }

        /// <summary>A run of `steps` DAFL steps, measured from step `warm` to the last progress report before the end.</summary>
        public async Task<Segment> RunAsync(int index, int warm, int steps, TextWriter log)
        {
            var spec = Path.Combine(dir, index < 0 ? "bench-warmup.yaml" : $"bench-{index}.yaml");
            await File.WriteAllTextAsync(spec, $$"""
                name: bench
                method: dafl
                seed: 3
                data: {name: mnist, image_size: 32}
                teacher:
                  arch: lenet5
                  checkpoint: {{Path.Combine(dir, "teacher.pt")}}
                student:
                  arch: lenet5-half
                  train: {optimizer: adam, lr: 0.002}
                dafl: {steps: {{steps + 5}}, batch_size: {{Batch}}, generator_width: 32, generator_lr: 0.02, activation: code, entropy: code, eval_every: 100000 }
                cluster: {checkpoint_every: 50, window: {{Window}}}
                guard: {enabled: false}
                """);
            var runId = await RunClient.SubmitAsync(node.Coordinator, spec, index < 0 ? "bench-warmup" : $"bench-{index}", TimeSpan.FromSeconds(60));
            var clock = Stopwatch.StartNew();
            // status asks go through the actors beside the run being measured: every 500 ms (the
            // `run` command asks every 2 s), and every 20 ms only within 15 steps of a window's edge
            // (the student reports every 5 steps), where they set the edge's time
            async Task<RunSummary> WaitFor(Func<RunSummary, bool> done, long? edge = null)
            {
                while (true)
                {
                    var s = (await RunClient.StatusAsync(node.Coordinator, runId, TimeSpan.FromSeconds(20)))[0];
                    if (s.State == RunState.Failed) throw new InvalidOperationException($"bench run failed: {s.Message}");
                    if (done(s)) return s;
                    await Task.Delay(edge is { } e && s.StudentStep >= e - 15 ? 20 : 500);
                }
            }
            var s0 = (await WaitFor(s => s.StudentStep >= warm, warm)).StudentStep;
            var t0 = clock.Elapsed.TotalSeconds;
            var cpu0 = ThreadCpu();
            var busy0 = Distill.Engine.Native.TorchThread.Shared.Busy;
            var gc0 = Heap.Now();
            var s1 = (await WaitFor(s => s.StudentStep >= steps, steps)).StudentStep;
            var t1 = clock.Elapsed.TotalSeconds;
            var busy = (Distill.Engine.Native.TorchThread.Shared.Busy - busy0).TotalSeconds / (t1 - t0);
            var gc = Heap.Now().Since(gc0, s1 - s0);
            var ips = (s1 - s0) * Batch / (t1 - t0);
            // CPU time by thread during the window: the compute thread and its OpenMP team are named
            // engine-compute; everything else (actors, journal, blobs, JIT) competes with them for the cores
            var cpu1 = ThreadCpu();
            var byName = cpu1.GroupBy(kv => kv.Value.Name)
                .Select(g => (Name: g.Key, Cores: g.Sum(kv => kv.Value.Ticks - (cpu0.TryGetValue(kv.Key, out var o) ? o.Ticks : 0)) / 100.0 / (t1 - t0)))
                .Where(x => x.Cores >= 0.005).OrderByDescending(x => x.Cores).ToList();
            var others = byName.Where(x => x.Name != "engine-compute").Sum(x => x.Cores);
            var batches = (double)(s1 - s0);
            long Delta(Func<(string Name, long Ticks, long Voluntary, long Involuntary), long> f, bool compute) =>
                cpu1.Where(kv => (kv.Value.Name == "engine-compute") == compute).Sum(kv => f(kv.Value) - (cpu0.TryGetValue(kv.Key, out var o) ? f(o) : 0));
            var wakeups = Delta(t => t.Voluntary, compute: false) / batches;
            var preempted = Delta(t => t.Involuntary, compute: true) / batches;
            var sleepsByName = cpu1.Where(kv => kv.Value.Name != "engine-compute").GroupBy(kv => kv.Value.Name)
                .Select(g => (Name: g.Key, PerBatch: g.Sum(kv => kv.Value.Voluntary - (cpu0.TryGetValue(kv.Key, out var o) ? o.Voluntary : 0)) / batches))
                .Where(x => x.PerBatch >= 0.5).OrderByDescending(x => x.PerBatch).Take(6);
            log.WriteLine($"[bench] actor pipeline: {ips:F0} images/s (steps {s0}-{s1}), compute thread busy {busy:P0}; cores: " +
                string.Join(", ", byName.Select(x => $"{x.Name} {x.Cores:F2}")) + $"; per batch: other threads slept {wakeups:F1} times (" +
                string.Join(", ", sleepsByName.Select(x => $"{x.Name} {x.PerBatch:F1}")) + $"), compute threads preempted {preempted:F1} times; {gc}");
            // the segment after this one starts on an idle machine
            await WaitFor(s => s.State == RunState.Completed);
            return new Segment(ips, busy, others, wakeups, preempted);
        }

        public void Dispose()
        {
            http?.DisposeAsync().AsTask().GetAwaiter().GetResult();
            node.DisposeAsync().AsTask().GetAwaiter().GetResult();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>The process's collections, allocations and page faults and the compute thread's jobs at one moment, to diff per batch.</summary>
    private sealed record Heap(TimeSpan Paused, int Gen0, int Gen2, long Allocated, long Renewals, long MinorFaults, IReadOnlyDictionary<string, (long Count, TimeSpan Time)> Jobs)
    {
        public static Heap Now() => new(GC.GetTotalPauseDuration(), GC.CollectionCount(0), GC.CollectionCount(2), GC.GetTotalAllocatedBytes(),
            Distill.Engine.Native.QuietCollections.Renewals, ProcessMinorFaults(), Distill.Engine.Native.TorchThread.Shared.JobTimes);

        // pages touched for the first time since they were mapped (the kernel zero-fills each 4 KiB page on a fault)
        private static long ProcessMinorFaults() => long.Parse(StatFields(File.ReadAllText("/proc/self/stat"))[7], CultureInfo.InvariantCulture);

        /// <summary>Per batch since `before`: GC pauses, collections, bytes allocated, page faults, and each job type's compute time.</summary>
        public string Since(Heap before, long batches)
        {
            var b = Math.Max(1, batches);
            var jobs = Jobs.Select(kv => (kv.Key, Count: kv.Value.Count - (before.Jobs.TryGetValue(kv.Key, out var o) ? o.Count : 0),
                    Ms: (kv.Value.Time - (before.Jobs.TryGetValue(kv.Key, out var p) ? p.Time : TimeSpan.Zero)).TotalMilliseconds))
                .Where(j => j.Count > 0).OrderByDescending(j => j.Ms);
            return string.Create(CultureInfo.InvariantCulture,
                $"per batch: GC paused {(Paused - before.Paused).TotalMilliseconds / b:F2} ms ({(double)(Gen0 - before.Gen0) / b:F2} collections, {(double)(Gen2 - before.Gen2) / b:F2} gen-2), " +
                $"{(Allocated - before.Allocated) / 1048576.0 / b:F2} MiB allocated, {(double)(Renewals - before.Renewals) / b:F2} no-GC regions, {(double)(MinorFaults - before.MinorFaults) / b:F0} page faults") +
                // (a segment measured inside one job, as the engine loop is, has no finished job to list)
                (jobs.Any() ? "; compute jobs: " + string.Join(", ", jobs.Select(j => string.Create(CultureInfo.InvariantCulture, $"{j.Key} {j.Ms / b:F1} ms ({j.Count} x {j.Ms / j.Count:F1})"))) : "");
        }
    }

    /// <summary>A /proc stat line's fields after the command name, from the state on (a name may hold spaces and parentheses).</summary>
    private static string[] StatFields(string stat) => stat[(stat.LastIndexOf(')') + 2)..].Split(' ');

    private static Dictionary<string, (string Name, long Ticks, long Voluntary, long Involuntary)> ThreadCpu()
    {
        var d = new Dictionary<string, (string, long, long, long)>();
        foreach (var dir in Directory.GetDirectories("/proc/self/task"))
        {
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var name = stat[(stat.IndexOf('(') + 1)..stat.LastIndexOf(')')];
                var f = StatFields(stat);
                var status = File.ReadAllLines(Path.Combine(dir, "status"));
                long Switches(string key) => long.Parse(status.First(l => l.StartsWith(key)).Split(':')[1].Trim());
                d[Path.GetFileName(dir)] = (name, long.Parse(f[11]) + long.Parse(f[12]), Switches("voluntary_ctxt_switches"), Switches("nonvoluntary_ctxt_switches"));
            }
            catch (IOException) { }
        }
        return d;
    }
}
