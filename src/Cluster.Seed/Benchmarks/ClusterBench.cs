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

public sealed record ClusterBenchRow(string Workload, string Detail, double Value, string Unit, string Note);

/// <summary>
/// The cluster's costs: the actor pipeline against the bare engine loop (same DAFL workload, same
/// machine), Akka.Remote throughput for batches against a raw TCP socket between two processes,
/// and a two-replica gradient all-reduce against the ring bound 2(N-1)/N x bytes / bandwidth.
/// </summary>
public static class ClusterBench
{
    private const int Batch = 128;
    /// <summary>The pipeline runs' student window (the generator then stores Window - 2 batches at a time).</summary>
    private const int Window = 4;

    /// <summary>Steps of warm-up and measured steps per segment; pipeline segments between engine segments.</summary>
    private static (int Warm, int Measured, int Pairs) Length(bool quick) => quick ? (20, 80, 2) : (40, 200, 5);

    public static IReadOnlyList<ClusterBenchRow> Run(TextWriter log, bool quick)
    {
        var rows = new List<ClusterBenchRow>();
        var (warm, measured, pairs) = Length(quick);
        // This shared 2-vCPU VM's speed drifts by 10-20% over minutes, more than the difference
        // measured here. So the two are interleaved, E P E P ... E, in one process with the node up
        // throughout, and each pipeline segment is compared with the mean of the engine segments on
        // either side of it.
        var engine = new List<double>();
        var pipeline = new List<Segment>();
        using (var bench = PipelineBench.StartAsync(log).GetAwaiter().GetResult())
        {
            // one unmeasured run of each first: the first pipeline run JIT-compiles the actor,
            // journal and remoting code (0.15-0.25 cores of tiered compilation beside it), which a
            // long run pays once
            log.WriteLine("[bench] warm-up (not measured)");
            Distill.Engine.Native.TorchThread.Shared.Run(() => EngineLoop(warm, warm + measured / 4, log)).GetAwaiter().GetResult();
            bench.RunAsync(-1, warm, warm + measured / 2, log).GetAwaiter().GetResult();
            for (var i = 0; i <= pairs; i++)
            {
                engine.Add(Distill.Engine.Native.TorchThread.Shared.Run(() => EngineLoop(warm, warm + measured, log)).GetAwaiter().GetResult());
                if (i < pairs) pipeline.Add(bench.RunAsync(i, warm, warm + measured, log).GetAwaiter().GetResult());
            }
        }
        // diagnostic: the engine loop's two halves as separate compute jobs with an await (a
        // thread-pool hand-over) between them, as the actors run them, but with no actors, copies or storage
        var jobs = EngineAsJobs(warm, warm + measured, log).GetAwaiter().GetResult();
        var engineAfter = Distill.Engine.Native.TorchThread.Shared.Run(() => EngineLoop(warm, warm + measured, log)).GetAwaiter().GetResult();
        var ratios = pipeline.Select((p, i) => p.ImagesPerSecond / ((engine[i] + engine[i + 1]) / 2)).Order().ToList();
        var median = ratios.Count % 2 == 1 ? ratios[ratios.Count / 2] : (ratios[ratios.Count / 2 - 1] + ratios[ratios.Count / 2]) / 2;
        string List(IEnumerable<double> xs) => string.Join(", ", xs.Select(x => x.ToString("F0", CultureInfo.InvariantCulture)));
        rows.Add(new("DAFL quick step, bare engine loop", $"batch {Batch}, {engine.Count} segments of {measured} steps", engine.Average(), "images/s",
            $"DaflTrainer on the compute thread, the node idle beside it; segments {List(engine)}"));
        rows.Add(new("DAFL quick step, actor pipeline", $"embedded one-node cluster, batch {Batch}, {pipeline.Count} runs, steps {warm}-{warm + measured}",
            pipeline.Average(p => p.ImagesPerSecond), "images/s",
            string.Create(CultureInfo.InvariantCulture, $"median {median:F3} x the engine segments beside it (range {ratios[0]:F3}-{ratios[^1]:F3}); runs {List(pipeline.Select(p => p.ImagesPerSecond))}; ") +
            $"generator, teacher, student actors, window {Window}, every batch stored and journaled before it is sent (group commit: {Window - 2} at a time); compute thread busy {pipeline.Average(p => p.ComputeBusy):P0}; " +
            $"other threads used {pipeline.Average(p => p.OtherCores):F2} cores and slept {pipeline.Average(p => p.Wakeups):F0} times per batch; " +
            $"compute threads preempted {pipeline.Average(p => p.Preempted):F0} times per batch"));

        rows.Add(new("DAFL quick step, engine halves as separate jobs", $"batch {Batch}, {measured} steps, generator and student jobs alternating with an await between",
            jobs, "images/s", string.Create(CultureInfo.InvariantCulture, $"{jobs / ((engine[^1] + engineAfter) / 2):F3} x the engine loop around it (diagnostic: the cost of job hand-overs alone)")));

        using var peer = Peer.Start(log);
        var mb = quick ? 64 : 256;
        var tcp = RawTcp(peer.TcpPort, mb);
        log.WriteLine($"[bench] raw TCP: {tcp:F0} MB/s");
        var system = ActorSystem.Create("bench", RemoteConfig(0));
        var router = system.ActorOf(Props.Create(() => new ReducerHost(null)), "reducer");
        var plane = DataPlane.Start("127.0.0.1", 0, "127.0.0.1", ContractCodec.DefaultMaxMessageBytes,
            deliver: m => router.Tell(m), fallback: m => log.WriteLine($"[bench] data plane fell back for {m.GetType().Name}"), warn: log.WriteLine);
        var akka = Wire(system, peer, null, mb, log).GetAwaiter().GetResult();
        var direct = Wire(system, peer, plane, mb, log).GetAwaiter().GetResult();
        rows.Add(new("wire: raw TCP socket, 2 processes", $"{mb} MiB in 512 KiB writes, loopback", tcp, "MB/s", "upper bound for the link"));
        rows.Add(new("wire: LabelledBatch over Akka.Remote, 2 processes", $"{mb} MiB as 128x1x32x32 batches + soft labels, 4 in flight", akka, "MB/s",
            $"{akka / tcp:F2} x raw TCP (MessagePack contract serializer)"));
        rows.Add(new("wire: LabelledBatch over the data plane, 2 processes", $"{mb} MiB as 128x1x32x32 batches + soft labels, 4 in flight", direct, "MB/s",
            $"{direct / tcp:F2} x raw TCP, {direct / akka:F0} x Akka.Remote (same contract and codec; credits through Akka)"));
        foreach (var floats in quick ? new[] { 1 << 20 } : [1 << 20, 4 << 20])
        {
            var bytes = floats * 4.0;
            var bound = 2.0 * (2 - 1) / 2 * bytes / (tcp * 1e6) * 1000;
            foreach (var via in new[] { null, plane })
            {
                var ms = AllReduce(system, router, peer, via, floats, quick ? 10 : 20, log).GetAwaiter().GetResult();
                rows.Add(new($"all-reduce, 2 replicas in 2 processes, {(via is null ? "Akka.Remote" : "data plane")}", $"{bytes / 1048576:F0} MiB gradient, 1 MiB chunks", ms, "ms",
                    $"ring bound 2(N-1)/N x bytes / TCP bandwidth = {bound:F1} ms -> {bound / ms:F2} of the bound"));
            }
        }
        plane.DisposeAsync().AsTask().Wait();
        system.Terminate().Wait();
        return rows;
    }

    public static void Save(IReadOnlyList<ClusterBenchRow> rows, string path, TextWriter log)
    {
        var md = new StringBuilder();
        md.AppendLine($"Machine: {Environment.ProcessorCount} logical CPUs, {get_num_threads()} torch threads; {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
        md.AppendLine();
        md.AppendLine("| workload | detail | value | unit | note |");
        md.AppendLine("|---|---|---:|---|---|");
        foreach (var r in rows) md.AppendLine(string.Create(CultureInfo.InvariantCulture, $"| {r.Workload} | {r.Detail} | {r.Value:F1} | {r.Unit} | {r.Note} |"));
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.ChangeExtension(path, ".md"), md.ToString());
        log.Write(md.ToString());
    }

    private static readonly DaflSpec Dafl = new()
    {
        Steps = 360, BatchSize = Batch, GeneratorWidth = 32, GeneratorLr = 0.02, Activation = "code", Entropy = "code", EvalEvery = 100_000,
    };

    private static Classifier Teacher()
    {
        manual_seed(1);
        return ModelFactory.Create("lenet5", 1, 32, 10);
    }

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
        for (var i = 0; i < steps; i++)
        {
            if (i == warm) sw.Start();
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
        await torch.Run(() => { synth.Dispose(); trainer.Dispose(); student.Dispose(); teacher.Dispose(); return 0; });
        log.WriteLine($"[bench] engine halves as separate jobs: {ips:F0} images/s");
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
        var sw = Stopwatch.StartNew();
        for (var i = warm; i < steps; i++) trainer.TrainStep(false);
        var ips = (steps - warm) * Batch / sw.Elapsed.TotalSeconds;
        log.WriteLine($"[bench] engine loop: {ips:F0} images/s");
        return ips;
    }

    /// <param name="Wakeups">Other threads' voluntary context switches per batch: each is a sleep, and the wake after it preempts a compute thread.</param>
    /// <param name="Preempted">The compute team's involuntary context switches per batch.</param>
    private sealed record Segment(double ImagesPerSecond, double ComputeBusy, double OtherCores, double Wakeups, double Preempted);

    /// <summary>An embedded one-node cluster that runs the bench's DAFL spec as a new run per segment.</summary>
    private sealed class PipelineBench : IDisposable
    {
        private readonly string dir;
        private readonly ClusterNode node;

        private PipelineBench(string dir, ClusterNode node)
        {
            this.dir = dir;
            this.node = node;
        }

        public static async Task<PipelineBench> StartAsync(TextWriter log)
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
            return new PipelineBench(dir, await ClusterNode.StartAsync(options));
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
            var s1 = (await WaitFor(s => s.StudentStep >= steps, steps)).StudentStep;
            var t1 = clock.Elapsed.TotalSeconds;
            var busy = (Distill.Engine.Native.TorchThread.Shared.Busy - busy0).TotalSeconds / (t1 - t0);
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
            log.WriteLine($"[bench] actor pipeline: {ips:F0} images/s (steps {s0}-{s1}), compute thread busy {busy:P0}; cores: " +
                string.Join(", ", byName.Select(x => $"{x.Name} {x.Cores:F2}")) + $"; per batch: other threads slept {wakeups:F1} times, compute threads preempted {preempted:F1} times");
            // the segment after this one starts on an idle machine
            await WaitFor(s => s.State == RunState.Completed);
            return new Segment(ips, busy, others, wakeups, preempted);
        }

        public void Dispose()
        {
            node.DisposeAsync().AsTask().GetAwaiter().GetResult();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    private static Dictionary<string, (string Name, long Ticks, long Voluntary, long Involuntary)> ThreadCpu()
    {
        var d = new Dictionary<string, (string, long, long, long)>();
        foreach (var dir in Directory.GetDirectories("/proc/self/task"))
        {
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var name = stat[(stat.IndexOf('(') + 1)..stat.LastIndexOf(')')];
                var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                var status = File.ReadAllLines(Path.Combine(dir, "status"));
                long Switches(string key) => long.Parse(status.First(l => l.StartsWith(key)).Split(':')[1].Trim());
                d[Path.GetFileName(dir)] = (name, long.Parse(f[11]) + long.Parse(f[12]), Switches("voluntary_ctxt_switches"), Switches("nonvoluntary_ctxt_switches"));
            }
            catch (IOException) { }
        }
        return d;
    }

    private static double RawTcp(int port, int mb)
    {
        using var client = new TcpClient();
        client.NoDelay = true;
        client.Connect(IPAddress.Loopback, port);
        using var s = client.GetStream();
        var buffer = new byte[512 * 1024];
        new Random(1).NextBytes(buffer);
        var total = (long)mb << 20;
        s.Write(BitConverter.GetBytes(total));
        var sw = Stopwatch.StartNew();
        for (long sent = 0; sent < total; sent += buffer.Length) s.Write(buffer, 0, (int)Math.Min(buffer.Length, total - sent));
        if (s.ReadByte() != 1) throw new IOException("raw TCP peer did not acknowledge");
        return total / 1e6 / sw.Elapsed.TotalSeconds;
    }

    private static Config RemoteConfig(int port) =>
        ConfigurationFactory.ParseString("akka.actor.provider = remote\nakka.loglevel = WARNING").WithFallback(HoconBuilder.Build(new NodeOptions
        {
            Port = port, Persistence = PersistenceOptions.Sqlite(Path.Combine(Path.GetTempPath(), "unused.db")),
            StoreDir = Path.GetTempPath(), RunsDir = Path.GetTempPath(),
        }));

    /// <summary>
    /// Batches from this process to the peer's sink with 4 in flight: through Akka.Remote, or over
    /// the data plane with the sink's credits coming back through Akka (as in a run).
    /// </summary>
    private static async Task<double> Wire(ActorSystem system, Peer peer, DataPlane? plane, int mb, TextWriter log)
    {
        var sink = await system.ActorSelection($"akka.tcp://bench-peer@127.0.0.1:{peer.AkkaPort}/user/sink").ResolveOne(TimeSpan.FromSeconds(20));
        manual_seed(4);
        using var x = randn(Batch, 1, 32, 32);
        using var p = nn.functional.softmax(randn(Batch, 10), 1);
        var images = TensorWire.ToPayload(x);
        var labels = TensorWire.ToPayload(p);
        var batchBytes = images.Data.Length + labels.Data.Length;
        var count = (int)(((long)mb << 20) / batchBytes);
        var done = new TaskCompletionSource<double>();
        Action<LabelledBatch> send = plane is null ? b => sink.Tell(b) : b => plane.Send(peer.DataEndpoint, b);
        var sender = system.ActorOf(Props.Create(() => new WireSender(sink, send, images, labels, count, 4, done)));
        var seconds = await done.Task.WaitAsync(TimeSpan.FromMinutes(5));
        var mbps = (double)count * batchBytes / 1e6 / seconds;
        log.WriteLine($"[bench] {(plane is null ? "Akka.Remote" : "data plane")} batches: {mbps:F0} MB/s ({count} batches of {batchBytes:N0} bytes)");
        await sender.GracefulStop(TimeSpan.FromSeconds(5));
        return mbps;
    }

    /// <summary>Keeps `window` batches in flight; the sink answers each with a RequestBatches credit.</summary>
    private sealed class WireSender : ReceiveActor
    {
        public WireSender(IActorRef sink, Action<LabelledBatch> send, TensorPayload images, TensorPayload labels, int count, int window, TaskCompletionSource<double> done)
        {
            var sw = new Stopwatch();
            long sent = 0, acked = 0;
            void Send() => send(new LabelledBatch("bench/student/0", ++sent, images, labels, 1));
            // the sink learns where credits go (batches over the data plane come without a sender)
            sink.Tell(new GetEntityStatus("bench/student/0"));
            Receive<EntityStatus>(_ =>
            {
                sw.Start();
                for (var i = 0; i < window && sent < count; i++) Send();
            });
            Receive<RequestBatches>(_ =>
            {
                if (++acked == count) { done.TrySetResult(sw.Elapsed.TotalSeconds); return; }
                if (sent < count) Send();
            });
        }
    }

    private static long reduceStep;

    /// <summary>Median time of a 2-replica all-reduce of `floats` floats, through Akka.Remote or over the data plane.</summary>
    private static async Task<double> AllReduce(ActorSystem system, IActorRef router, Peer peer, DataPlane? plane, int floats, int reps, TextWriter log)
    {
        var remote = await system.ActorSelection($"akka.tcp://bench-peer@127.0.0.1:{peer.AkkaPort}/user/reducer").ResolveOne(TimeSpan.FromSeconds(20));
        if (plane is not null)
        {
            // the peer's reducers answer over the data plane to this endpoint, and confirm through Akka to the router
            var registered = new TaskCompletionSource();
            router.Tell(new ReducerHost.Announce(remote, plane.Endpoint, registered));
            await registered.Task.WaitAsync(TimeSpan.FromSeconds(20));
        }
        var gradient = new float[floats];
        var rnd = new Random(5);
        for (var i = 0; i < floats; i++) gradient[i] = (float)rnd.NextDouble();
        var times = new List<double>();
        for (var r = 0; r < reps + 1; r++)
        {
            var done = new TaskCompletionSource<double>();
            var step = Interlocked.Increment(ref reduceStep);   // unique per all-reduce: the peer keeps one reducer per step
            Action<GradientChunk> send = plane is null ? c => remote.Tell(c) : c => plane.Send(peer.DataEndpoint, c);
            var a = system.ActorOf(Props.Create(() => new Reducer(send, null, gradient, step, done)));
            // chunks and the confirmation that come to the router find this reducer by step
            router.Tell(new ReducerHost.Register(step, a));
            var ms = await done.Task.WaitAsync(TimeSpan.FromMinutes(2));
            await a.GracefulStop(TimeSpan.FromSeconds(5));
            if (r > 0) times.Add(ms);   // the first is warm-up
        }
        times.Sort();
        var median = times[times.Count / 2];
        log.WriteLine($"[bench] all-reduce of {floats * 4.0 / 1048576:F0} MiB between 2 processes, {(plane is null ? "Akka.Remote" : "data plane")}: {median:F1} ms");
        return median;
    }

    /// <summary>
    /// One replica's side of the students' all-reduce, through the shipped <see cref="GradientExchange"/>:
    /// its gradient in chunks to the peer, the peer's chunks taken as they arrive, and the mean once
    /// both are whole; done when the peer confirmed it has ours too. The initiator (replica 0, done
    /// set) sends first; the responder (replica 1) sends when the first chunk arrives and confirms to
    /// confirmTo once it has reduced.
    /// </summary>
    internal sealed class Reducer : ReceiveActor
    {
        public static readonly int Chunk = new ClusterSpec().GradientChunk;   // the students' default

        public Reducer(Action<GradientChunk> send, IActorRef? confirmTo, float[] gradient, long step, TaskCompletionSource<double>? done)
        {
            var sw = Stopwatch.StartNew();
            var self = done is null ? 1 : 0;
            var exchange = new GradientExchange(2, self, gradient.Length);
            exchange.Own(step, gradient);
            var sent = false;
            float[]? mean = null;
            var peerHasOurs = false;
            void SendAll()
            {
                sent = true;
                foreach (var c in GradientExchange.Chunks($"bench/student/{1 - self}", step, self, gradient, Chunk)) send(c);
            }
            void Check()
            {
                mean ??= exchange.TakeComplete(step)?.Mean();
                if (mean is null || !peerHasOurs && done is not null) return;
                if (done is null) confirmTo!.Tell(new EntityStatus("bench/student/0", true, step, step, 0, 0, "peer", "reduced"));
                else done.TrySetResult(sw.Elapsed.TotalMilliseconds);
            }
            if (done is not null) SendAll();
            Receive<GradientChunk>(c =>
            {
                if (!sent) SendAll();
                if (exchange.Accept(c, step) != ChunkVerdict.Accepted) throw new InvalidOperationException($"bench chunk {c.ChunkIndex} of step {c.Step} refused");
                Check();
            });
            Receive<EntityStatus>(_ => { peerHasOurs = true; Check(); });
        }
    }

    /// <summary>The second process: a sink and reducers reached through Akka.Remote and the data plane, and a raw TCP sink.</summary>
    public static int RunPeer(int akkaPort, int tcpPort, TextWriter stdout)
    {
        var system = ActorSystem.Create("bench-peer", RemoteConfig(akkaPort));
        var sink = system.ActorOf(Props.Create(() => new Sink()), "sink");
        DataPlane? plane = null;
        var reducer = system.ActorOf(Props.Create(() => new ReducerHost(() => plane!)), "reducer");
        plane = DataPlane.Start("127.0.0.1", 0, "127.0.0.1", ContractCodec.DefaultMaxMessageBytes,
            deliver: m => (m is LabelledBatch ? sink : reducer).Tell(m), fallback: _ => { }, warn: stdout.WriteLine);
        var listener = new TcpListener(IPAddress.Loopback, tcpPort);
        listener.Start();
        stdout.WriteLine($"ready {plane.Endpoint}");
        stdout.Flush();
        while (true)
        {
            using var c = listener.AcceptTcpClient();
            using var s = c.GetStream();
            var header = new byte[8];
            s.ReadExactly(header);
            var total = BitConverter.ToInt64(header);
            var buffer = new byte[1 << 20];
            for (long got = 0; got < total;)
            {
                var n = s.Read(buffer, 0, (int)Math.Min(buffer.Length, total - got));
                if (n == 0) break;
                got += n;
            }
            s.WriteByte(1);
        }
    }

    /// <summary>Whether a message came with a sender (through Akka) rather than from the data plane, which has none.</summary>
    private static bool CameOverAkka(IActorRef sender, ActorSystem system) => !(sender.IsNobody() || sender.Equals(system.DeadLetters));

    /// <summary>Answers each batch with a credit: to its sender, or (over the data plane, no sender) to the registered one.</summary>
    private sealed class Sink : ReceiveActor
    {
        public Sink()
        {
            IActorRef credits = ActorRefs.Nobody;
            Receive<GetEntityStatus>(m => { credits = Sender; Sender.Tell(new EntityStatus(m.EntityId, true, 0, 0, 0, 0, "peer", "sink")); });
            Receive<LabelledBatch>(b =>
            {
                var to = CameOverAkka(Sender, Context.System) ? Sender : credits;
                to.Tell(new RequestBatches("bench/generator/0", b.Seq + 1, 1, b.EntityId));
            });
        }
    }

    /// <summary>
    /// One reducer per step. On the peer (plane given), a step's first chunk starts a responder that
    /// answers through Akka to the chunk's sender, or over the data plane to the registered endpoint.
    /// In the bench process, routes chunks and confirmations to the registered initiator of the step.
    /// </summary>
    private sealed class ReducerHost : ReceiveActor
    {
        public sealed record Register(long Step, IActorRef Reducer);
        /// <summary>Bench side: tell the peer's host our endpoint (confirmations come back here).</summary>
        public sealed record Announce(IActorRef Peer, string Endpoint, TaskCompletionSource Done);

        public ReducerHost(Func<DataPlane>? plane)
        {
            var byStep = new Dictionary<long, IActorRef>();
            IActorRef replyTo = ActorRefs.Nobody;
            string? endpoint = null;
            Receive<Register>(r => byStep[r.Step] = r.Reducer);
            TaskCompletionSource? announced = null;
            Receive<Announce>(a =>
            {
                announced = a.Done;
                a.Peer.Tell(new ReplicaAt("bench/student/1", 0, 0, 1, a.Endpoint));
            });
            Receive<ReplicaAt>(m =>
            {
                (replyTo, endpoint) = (Sender, m.DataEndpoint);
                Sender.Tell(new EntityStatus(m.EntityId, true, 0, 0, 0, 0, "peer", "registered"));
            });
            Receive<EntityStatus>(m =>
            {
                if (m.Detail == "registered") announced?.TrySetResult();
                else if (byStep.TryGetValue(m.Step, out var r)) r.Forward(m);
            });
            Receive<GradientChunk>(c =>
            {
                if (!byStep.TryGetValue(c.Step, out var r))
                {
                    if (plane is null) return;
                    var size = c.ChunkCount * Reducer.Chunk;
                    var viaAkka = CameOverAkka(Sender, Context.System);
                    var target = viaAkka ? Sender : replyTo;
                    var to = endpoint;
                    Action<GradientChunk> send = viaAkka ? x => target.Tell(x) : x => plane().Send(to!, x);
                    byStep[c.Step] = r = Context.ActorOf(Props.Create(() => new Reducer(send, target, new float[size], c.Step, null)));
                }
                r.Forward(c);
            });
        }
    }

    private sealed class Peer : IDisposable
    {
        private readonly Process process;
        public int AkkaPort { get; }
        public int TcpPort { get; }
        public string DataEndpoint { get; }

        private Peer(Process p, int akka, int tcp, string data) { process = p; AkkaPort = akka; TcpPort = tcp; DataEndpoint = data; }

        public static Peer Start(TextWriter log)
        {
            int Free() { var l = new TcpListener(IPAddress.Loopback, 0); l.Start(); var port = ((IPEndPoint)l.LocalEndpoint).Port; l.Stop(); return port; }
            var (akka, tcp) = (Free(), Free());
            var psi = new ProcessStartInfo(Environment.ProcessPath!, ["bench-peer", "--port", akka.ToString(), "--tcp-port", tcp.ToString()])
            { RedirectStandardOutput = true, RedirectStandardError = true };
            var p = Process.Start(psi)!;
            var line = p.StandardOutput.ReadLine();
            if (line?.StartsWith("ready ") != true) throw new InvalidOperationException($"bench peer did not start: {line} {p.StandardError.ReadToEnd()}");
            var data = line["ready ".Length..];
            log.WriteLine($"[bench] peer process {p.Id}: Akka.Remote on {akka}, raw TCP on {tcp}, data plane at {data}");
            return new Peer(p, akka, tcp, data);
        }

        public void Dispose()
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            process.Dispose();
        }
    }
}
