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
using Cluster.Node.Security;
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
public static partial class ClusterBench
{
    private const int Batch = 128;
    /// <summary>The pipeline runs' student window (the generator then stores Window - 2 batches at a time).</summary>
    private const int Window = 4;

    /// <summary>Steps of warm-up and measured steps per segment; pipeline segments between engine segments.</summary>
    private static (int Warm, int Measured, int Pairs) Length(bool quick) => quick ? (20, 80, 2) : (40, 120, 8);

    /// <param name="httpPort">the pipeline's node also serves the API, dashboard and /metrics there (to measure what watching costs)</param>
    /// <param name="tls">a folder of TLS material (--tls): Akka.Remote and the data plane between the two processes over mutually authenticated TLS</param>
    public static IReadOnlyList<ClusterBenchRow> Run(TextWriter log, bool quick, IReadOnlySet<string> parts, int? httpPort = null, string? tls = null)
    {
        var rows = new List<ClusterBenchRow>();
        if (parts.Contains("pipeline")) rows.AddRange(PipelineRows(log, quick, httpPort));
        if (parts.Contains("wire") || parts.Contains("allreduce")) rows.AddRange(PeerRows(log, quick, parts, tls));
        if (parts.Contains("sweeps")) rows.AddRange(SweepRows(log, quick));
        return rows;
    }

    private static List<ClusterBenchRow> PipelineRows(TextWriter log, bool quick, int? httpPort)
    {
        var rows = new List<ClusterBenchRow>();
        var (warm, measured, pairs) = Length(quick);
        // This shared 2-vCPU VM's speed drifts by 10-20% over minutes, more than the difference
        // measured here. So the two are interleaved, E P E P ... E, in one process with the node up
        // throughout, and each pipeline segment is compared with the mean of the engine segments on
        // either side of it.
        var engine = new List<double>();
        var pipeline = new List<Segment>();
        using (var bench = PipelineBench.StartAsync(log, httpPort).GetAwaiter().GetResult())
        {
            // one unmeasured run of each first: the first pipeline run JIT-compiles the actor,
            // journal and remoting code (0.15-0.25 cores of tiered compilation beside it), which a
            // long run pays once
            var idle0 = ThreadCpu();
            Thread.Sleep(3000);
            var idle1 = ThreadCpu();
            log.WriteLine("[bench] idle node, sleeps per second by thread: " + string.Join(", ", idle1.GroupBy(kv => kv.Value.Name)
                .Select(g => (g.Key, PerSecond: g.Sum(kv => kv.Value.Voluntary - (idle0.TryGetValue(kv.Key, out var o) ? o.Voluntary : 0)) / 3.0))
                .Where(x => x.PerSecond >= 0.5).OrderByDescending(x => x.PerSecond).Select(x => $"{x.Key} {x.PerSecond:F0}")));
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
            $"generator, teacher, student actors, window {Window}, every batch journaled before it is sent (group commit: {Window - 2} at a time) and held in memory until released; compute thread busy {pipeline.Average(p => p.ComputeBusy):P0}; " +
            $"other threads used {pipeline.Average(p => p.OtherCores):F2} cores and slept {pipeline.Average(p => p.Wakeups):F0} times per batch; " +
            $"compute threads preempted {pipeline.Average(p => p.Preempted):F0} times per batch"));

        rows.Add(new("DAFL quick step, engine halves as separate jobs", $"batch {Batch}, {measured} steps, generator and student jobs alternating with an await between",
            jobs, "images/s", string.Create(CultureInfo.InvariantCulture, $"{jobs / ((engine[^1] + engineAfter) / 2):F3} x the engine loop around it (diagnostic: the cost of job hand-overs alone)")));

        return rows;
    }

    /// <summary>The rows that need the second process: the wire's throughput and the all-reduce.</summary>
    private static List<ClusterBenchRow> PeerRows(TextWriter log, bool quick, IReadOnlySet<string> parts, string? tlsFolder)
    {
        var rows = new List<ClusterBenchRow>();
        var tls = tlsFolder is null ? null : NodeTls.Load(tlsFolder);
        var over = tls is null ? "" : ", TLS";
        using var peer = Peer.Start(log, tlsFolder);
        var mb = quick ? 64 : 256;
        var tcp = RawTcp(peer.TcpPort, mb);
        log.WriteLine($"[bench] raw TCP: {tcp:F0} MB/s");
        var system = NodeActorSystem.Create("bench", RemoteConfig(0, tls), tls);
        var router = system.ActorOf(Props.Create(() => new ReducerHost(null)), "reducer");
        var plane = DataPlane.Start("127.0.0.1", 0, "127.0.0.1", ContractCodec.DefaultMaxMessageBytes,
            deliver: m => router.Tell(m), fallback: m => log.WriteLine($"[bench] data plane fell back for {m.GetType().Name}"), warn: log.WriteLine, tls: tls);
        rows.Add(new("wire: raw TCP socket, 2 processes", $"{mb} MiB in 512 KiB writes, loopback", tcp, "MB/s", "upper bound for the link"));
        if (parts.Contains("wire"))
        {
            var akka = Wire(system, peer, null, mb, log).GetAwaiter().GetResult();
            var direct = Wire(system, peer, plane, mb, log).GetAwaiter().GetResult();
            rows.Add(new($"wire: LabelledBatch over Akka.Remote{over}, 2 processes", $"{mb} MiB as 128x1x32x32 batches + soft labels, 4 in flight", akka, "MB/s",
                $"{akka / tcp:F2} x raw TCP (MessagePack contract serializer)"));
            rows.Add(new($"wire: LabelledBatch over the data plane{over}, 2 processes", $"{mb} MiB as 128x1x32x32 batches + soft labels, 4 in flight", direct, "MB/s",
                $"{direct / tcp:F2} x raw TCP, {direct / akka:F0} x Akka.Remote (same contract and codec; credits through Akka)"));
        }
        if (parts.Contains("allreduce"))
        {
            foreach (var floats in quick ? new[] { 1 << 20 } : [1 << 20, 4 << 20])
            {
                var bytes = floats * 4L;
                foreach (var via in new[] { null, plane })
                {
                    var t = AllReduce(system, router, peer, via, floats, quick ? 10 : 20, quick ? 16 : 64, log).GetAwaiter().GetResult();
                    rows.Add(new($"all-reduce, 2 replicas in 2 processes, {(via is null ? "Akka.Remote" : "data plane")}{over}", $"{bytes / 1048576:F0} MiB gradient, {Reducer.Chunk * 4 / 1048576.0:0.##} MiB chunks", t.Median, "ms",
                        string.Create(CultureInfo.InvariantCulture, $"median of {(quick ? 10 : 20)} (fastest {t.Fastest:F1}, slowest {t.Slowest:F1}); ring bound 2(N-1)/N x bytes / TCP bandwidth = {t.Bound(bytes):F1} ms ({t.LinkMBps:F0} MB/s) -> {t.Median / t.Bound(bytes):F2} x the bound; ") +
                        string.Create(CultureInfo.InvariantCulture, $"the same bytes over raw TCP: one way {t.RawOneWay:F1} ms, both ways at once {t.RawDuplex:F1} ms ({t.Median / t.RawDuplex:F2} x); references measured between the repetitions; {t.Gen2} gen-2 GCs in this process")));
                }
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

    private static Classifier Teacher()
    {
        manual_seed(1);
        return ModelFactory.Create("lenet5", 1, 32, 10);
    }

    /// <param name="Wakeups">Other threads' voluntary context switches per batch: each is a sleep, and the wake after it preempts a compute thread.</param>
    /// <param name="Preempted">The compute team's involuntary context switches per batch.</param>

    private static Config RemoteConfig(int port, NodeTls? tls) =>
        ConfigurationFactory.ParseString("akka.actor.provider = remote\nakka.loglevel = WARNING").WithFallback(HoconBuilder.Build(new NodeOptions
        {
            Port = port, Tls = tls, Persistence = PersistenceOptions.Sqlite(Path.Combine(Path.GetTempPath(), "unused.db")),
            StoreDir = Path.GetTempPath(), RunsDir = Path.GetTempPath(),
        }));


    /// <summary>Whether a message came with a sender (through Akka) rather than from the data plane, which has none.</summary>
    private static bool CameOverAkka(IActorRef sender, ActorSystem system) => !(sender.IsNobody() || sender.Equals(system.DeadLetters));

}
