using Akka.Actor;
using Akka.Configuration;
using Akka.TestKit;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Distill.Engine.Models;
using Npgsql;
using static TorchSharp.torch;

namespace Cluster.Tests.Cluster;

/// <summary>
/// One entity or coordinator under test, with a real journal (a fresh SQLite file, or a fresh
/// schema on the PostgreSQL server scripts/test.sh starts) and test probes in place of the other
/// shard regions. (akka.actor.serialize-messages stays off: Akka.Persistence.Sql's own internal
/// WriteFinished message cannot be serialised and would be dropped. Every contract's round trip
/// is tested in ContractSerializerTests, and the multi-process tests send them over real TCP.)
/// </summary>
public sealed class ActorHarness : IDisposable
{
    public const string Sqlite = "sqlite";
    public const string Postgres = "postgres";

    public static TheoryData<string> Providers => [Sqlite, Postgres];

    /// <param name="configure">changes to the node's options (a teacher cache of the test's own, say)</param>
    public ActorHarness(string provider, string name, Func<NodeOptions, NodeOptions>? configure = null)
    {
        Torch.Init();
        Dir = Path.Combine(Path.GetTempPath(), $"cd-actors-{name}-{Guid.NewGuid():N}"[..40]);
        Directory.CreateDirectory(Dir);
        Options = new NodeOptions
        {
            Persistence = provider == Sqlite ? PersistenceOptions.Sqlite(Path.Combine(Dir, "journal.db")) : PostgresSchema(),
            StoreDir = Path.Combine(Dir, "blobs"),
            RunsDir = Path.Combine(Dir, "runs"),
            LogLevel = Environment.GetEnvironmentVariable("CLUSTERDISTILL_TEST_LOGLEVEL") ?? "WARNING",
        };
        if (configure is not null) Options = configure(Options);
        PersistenceCheck.EnsureReachableAsync(Options.Persistence).GetAwaiter().GetResult();
        var config = ConfigurationFactory.ParseString("akka.actor.provider = local")
            .WithFallback(HoconBuilder.Build(Options));
        Kit = new Akka.TestKit.Xunit2.TestKit(config, name);
        Services = new NodeServices(Options);
        Coordinator = Kit.CreateTestProbe("coordinator");
        Generators = Kit.CreateTestProbe("generators");
        Teachers = Kit.CreateTestProbe("teachers");
        Students = Kit.CreateTestProbe("students");
        Services.Coordinator = Coordinator;
        Services.Generators = Generators;
        Services.Teachers = Teachers;
        Services.Students = Students;
    }

    public string Dir { get; }
    public NodeOptions Options { get; }
    public Akka.TestKit.Xunit2.TestKit Kit { get; }
    public ActorSystem Sys => Kit.Sys;
    public NodeServices Services { get; }
    public TestProbe Coordinator { get; }
    public TestProbe Generators { get; }
    public TestProbe Teachers { get; }
    public TestProbe Students { get; }

    /// <summary>A fresh schema per test, so that journals of other tests and runs are invisible.</summary>
    private static PersistenceOptions PostgresSchema()
    {
        var cs = Environment.GetEnvironmentVariable("CLUSTERDISTILL_PG")
                 ?? throw new InvalidOperationException("CLUSTERDISTILL_PG is not set: run the tests through scripts/test.sh, which starts PostgreSQL (scripts/postgres.sh)");
        var schema = $"t_{Guid.NewGuid():N}";
        using (var c = new NpgsqlConnection(cs))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = $"CREATE SCHEMA {schema}";
            cmd.ExecuteNonQuery();
        }
        return PersistenceOptions.Postgres($"{cs};Search Path={schema}");
    }

    /// <summary>Stops an actor and waits until it is gone (its journal writes are done).</summary>
    public void Stop(IActorRef actor)
    {
        var probe = Kit.CreateTestProbe();
        probe.Watch(actor);
        actor.Tell(PoisonPill.Instance);
        probe.ExpectTerminated(actor, TimeSpan.FromSeconds(30));
    }

    /// <summary>A LeNet-5 teacher with seeded random weights, stored as a blob (made on the compute thread).</summary>
    public string TeacherBlob(int seed = 11, string arch = "lenet5") => EngineAccess.Compute(() =>
    {
        manual_seed(seed);
        using var t = ModelFactory.Create(arch, 1, 32, 10);
        return Services.Blobs.Put(EngineAccess.SaveModel(t));
    }).GetAwaiter().GetResult();

    public static string Spec(string runName, int steps = 12, int evalEvery = 4, int checkpointEvery = 2, int generatorCheckpointEvery = 3, int replicas = 1, int window = 2,
        int batchMemoryMb = 256) => $$"""
        name: {{runName}}
        method: dafl
        seed: 4
        data: {name: mnist, image_size: 32}
        teacher:
          arch: lenet5
          train: {steps: 20, batch_size: 64}
        student:
          arch: lenet5-half
          train: {optimizer: adam, lr: 0.002}
        dafl: {steps: {{steps}}, batch_size: 16, generator_width: 8, generator_lr: 0.02, activation: code, entropy: code, eval_every: {{evalEvery}} }
        cluster: {checkpoint_every: {{checkpointEvery}}, generator_checkpoint_every: {{generatorCheckpointEvery}}, replicas: {{replicas}}, window: {{window}}, batch_memory_mb: {{batchMemoryMb}} }
        """;

    public void Dispose()
    {
        Kit.Shutdown(TimeSpan.FromSeconds(30));
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }
}
