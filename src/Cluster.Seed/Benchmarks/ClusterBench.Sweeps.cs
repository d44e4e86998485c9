using System.Diagnostics;
using System.Globalization;
using Akka.Actor;
using Akka.Configuration;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Serialization;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Actors;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;

namespace Cluster.Seed.Benchmarks;

/// <summary>
/// The sweep coordinator at scale: thousands of simulated trials that train nothing but report
/// through the real contracts (each message encoded and decoded by the wire codec) to the real
/// coordinator, with its real SQLite journal. Measures the decisions' latency (a report's arrival to
/// its decision journalled), memory, and the time a new coordinator takes to recover the sweep.
/// </summary>
public static partial class ClusterBench
{
    private static List<ClusterBenchRow> SweepRows(TextWriter log, bool quick)
    {
        var trials = quick ? 1000 : 10_000;
        const int concurrent = 200, steps = 400, every = 100;
        var dir = Path.Combine(Path.GetTempPath(), $"clusterdistill-sweepbench-{Environment.ProcessId}");
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        Directory.CreateDirectory(dir);
        var yaml = $$"""
            name: scale
            seed: 3
            base:
              name: scale-trial
              method: kd
              data: {name: mnist, image_size: 32}
              teacher: {arch: lenet5, train: {epochs: 1} }
              student:
                arch: lenet5-half
                train: {steps: {{steps}}, batch_size: 64, eval_every: {{every}} }
            space:
              student.train.lr: {loguniform: [0.0001, 0.01]}
              kd.alpha: {uniform: [0, 1]}
              kd.temperature: {choice: [1, 2, 4, 8]}
            search: {kind: random, samples: {{trials}}}
            scheduler: {kind: asha, grace_period: {{every}}, reduction_factor: 3}
            limits: {max_concurrent: {{concurrent}}}
            """;
        var options = new NodeOptions
        {
            Persistence = PersistenceOptions.Sqlite(Path.Combine(dir, "journal.db")),
            StoreDir = Path.Combine(dir, "blobs"),
            RunsDir = Path.Combine(dir, "runs"),
            SweepsDir = Path.Combine(dir, "sweeps"),
            LogLevel = "WARNING",
        };
        PersistenceCheck.EnsureReachableAsync(options.Persistence).GetAwaiter().GetResult();
        var config = ConfigurationFactory.ParseString("akka.actor.provider = local").WithFallback(HoconBuilder.Build(options));
        var rows = new List<ClusterBenchRow>();
        string id;
        SweepSummary done;
        var wall = Stopwatch.StartNew();
        var services = new NodeServices(options);
        using (var system = ActorSystem.Create("sweepbench", config))
        {
            services.Coordinator = system.ActorOf(Props.Create(() => new TrialSimulator(services, steps, every)), "runs");
            services.Sweeps = system.ActorOf(SweepCoordinator.GetProps(services), "sweeps");
            id = SweepClient.SubmitAsync(services.Sweeps, yaml, Path.Combine(dir, "scale.yaml"), "scale", TimeSpan.FromSeconds(60)).GetAwaiter().GetResult().SweepId;
            while (true)
            {
                Thread.Sleep(5000);
                var s = SweepClient.StatusAsync(services.Sweeps, id, TimeSpan.FromMinutes(2)).GetAwaiter().GetResult()[0];
                log.WriteLine($"[bench] sweeps: {s.Trials.Length:N0} trials, {s.Trials.Count(t => t.State == TrialState.Running)} running, " +
                              $"{services.SweepDecisionTimes.Count:N0} decisions, {wall.Elapsed.TotalSeconds:F0} s");
                if (s.State != SweepState.Running) { done = s; break; }
            }
            wall.Stop();
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            var heap = GC.GetTotalMemory(forceFullCollection: true) / 1048576.0;
            var rss = Environment.WorkingSet / 1048576.0;
            var decisions = services.SweepDecisionTimes.Count;
            var stopped = done.Trials.Count(t => t.State == TrialState.Stopped);
            rows.Add(new("sweep coordinator", $"{trials:N0} simulated trials, random + asha, {concurrent} at once", wall.Elapsed.TotalSeconds, "s",
                $"{decisions:N0} reports decided ({decisions / wall.Elapsed.TotalSeconds:F0}/s), {stopped:N0} trials stopped early, SQLite journal"));
            rows.Add(new("sweep coordinator", "decision latency p50 (report in, decision journalled)", services.SweepDecisionTimes.Percentile(0.5), "ms", ""));
            rows.Add(new("sweep coordinator", "decision latency p99", services.SweepDecisionTimes.Percentile(0.99), "ms", ""));
            rows.Add(new("sweep coordinator", "managed heap after the sweep", heap, "MiB", $"process working set {rss:F0} MiB"));
            system.Terminate().Wait();
        }

        // a new coordinator on the same journal: the time until it answers with the whole sweep
        using (var system = ActorSystem.Create("sweepbench2", config))
        {
            var again = new NodeServices(options) { Coordinator = ActorRefs.Nobody };
            var clock = Stopwatch.StartNew();
            again.Sweeps = system.ActorOf(SweepCoordinator.GetProps(again), "sweeps");
            var s = SweepClient.StatusAsync(again.Sweeps, id, TimeSpan.FromMinutes(10)).GetAwaiter().GetResult()[0];
            clock.Stop();
            if (s.Trials.Length != done.Trials.Length || s.State != done.State)
                throw new InvalidOperationException($"the recovered sweep has {s.Trials.Length} trials ({s.State}), the sweep had {done.Trials.Length} ({done.State})");
            rows.Add(new("sweep coordinator", $"recovery of the sweep ({s.Trials.Length:N0} trials) by a new coordinator", clock.Elapsed.TotalSeconds, "s",
                "replays the journal and rebuilds the scheduler from the journalled reports"));
            system.Terminate().Wait();
        }
        Directory.Delete(dir, recursive: true);
        foreach (var r in rows) log.WriteLine($"[bench] {r.Workload}: {r.Detail}: {r.Value:F2} {r.Unit} {r.Note}");
        return rows;
    }

    /// <summary>
    /// Stands in for the run coordinator: every 100 ms each running trial "trains" one evaluation
    /// interval and reports an accuracy that rises towards a ceiling set by its spec's hash; it ends
    /// at its last step, or when the sweep cancels it. Every message goes through the wire codec.
    /// </summary>
    private sealed class TrialSimulator : ReceiveActor, IWithTimers
    {
        private sealed record Tick;

        private sealed class Trial(string sweepId, string runId, double ceiling)
        {
            public string SweepId { get; } = sweepId;
            public string RunId { get; } = runId;
            public double Ceiling { get; } = ceiling;
            public long Step;
            public RunState State = RunState.Training;
        }

        private readonly Dictionary<string, Trial> trials = [];
        public ITimerScheduler Timers { get; set; } = null!;

        private static T Wire<T>(T message) where T : notnull =>
            (T)ContractCodec.Deserialize(ContractCodec.Serialize(message), ContractCodec.Manifest(message));

        public TrialSimulator(NodeServices services, int steps, int every)
        {
            Receive<SubmitRun>(m0 =>
            {
                var m = Wire(m0);
                if (!trials.ContainsKey(m.RunId!))
                {
                    var hash = (uint)m.SpecYaml.Aggregate(17, (h, c) => unchecked(h * 31 + c));
                    trials[m.RunId!] = new Trial(m.SweepId!, m.RunId!, 50 + hash % 4900 / 100.0);
                }
                Sender.Tell(Wire(new RunAccepted(m.RunId!, false)));
            });
            Receive<CancelRun>(m0 =>
            {
                var m = Wire(m0);
                if (trials.TryGetValue(m.RunId, out var t) && t.State == RunState.Training)
                {
                    t.State = RunState.Cancelled;
                    services.Sweeps.Tell(Wire(new TrialRunEnded(t.SweepId, t.RunId, RunState.Cancelled, t.Step, Accuracy(t), $"cancelled: {m.Reason}")));
                }
                Sender.Tell(Wire(new CancelAnswer(m.RunId, t?.State ?? RunState.Cancelled, false)));
            });
            Receive<GetRunStatus>(m0 =>
            {
                var m = Wire(m0);
                var found = m.RunId is { } id && trials.TryGetValue(id, out var t)
                    ? new[] { new RunSummary(t.RunId, "trial", "kd", t.State, t.Step, steps, 0, 0, 0, 0, null, Accuracy(t), null, null, null) }
                    : [];
                Sender.Tell(Wire(new RunStatusReport(found)));
            });
            Receive<Tick>(_ =>
            {
                foreach (var t in trials.Values.Where(t => t.State == RunState.Training))
                {
                    t.Step += every;
                    services.Sweeps.Tell(Wire(new TrialMetrics(t.SweepId, t.RunId, t.Step, ["loss", "test_accuracy"], [1.0 / t.Step, Accuracy(t)])));
                    if (t.Step >= steps)
                    {
                        t.State = RunState.Completed;
                        services.Sweeps.Tell(Wire(new TrialRunEnded(t.SweepId, t.RunId, RunState.Completed, t.Step, Accuracy(t), null)));
                    }
                }
            });
        }

        private static double Accuracy(Trial t) => Math.Round(t.Ceiling * (1 - Math.Exp(-t.Step / 150.0)), 2);

        protected override void PreStart() => Timers.StartPeriodicTimer("tick", new Tick(), TimeSpan.FromMilliseconds(100));
    }
}
