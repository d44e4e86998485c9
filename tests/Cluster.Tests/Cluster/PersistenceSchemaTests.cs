using Akka.Actor;
using Akka.Configuration;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Npgsql;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The plugins' tables are created by one node at a time on a shared PostgreSQL database: nodes
/// that start together raced in CREATE TABLE IF NOT EXISTS, and the loser's plugin never served.
/// Each test has a fresh database of its own on the server scripts/test.sh started.
/// </summary>
public sealed class PersistenceSchemaTests : IDisposable
{
    private static readonly string[] Tables = ["journal", "snapshot", "sharding_journal", "sharding_snapshot"];
    private readonly string server;
    private readonly string db = $"cd_schema_{Guid.NewGuid():N}"[..24];
    private readonly List<ActorSystem> systems = [];

    public PersistenceSchemaTests()
    {
        server = Environment.GetEnvironmentVariable("CLUSTERDISTILL_PG")
                 ?? throw new InvalidOperationException("CLUSTERDISTILL_PG is not set: run the tests through scripts/test.sh");
        Execute(server, $"CREATE DATABASE {db}");
    }

    private string Database => server.Replace("Database=clusterdistill", $"Database={db}");
    private PersistenceOptions Options => PersistenceOptions.Postgres(Database);

    [Fact]
    public async Task A_node_creates_no_table_while_another_holds_the_schema_lock_and_creates_them_all_once_it_is_released()
    {
        await using var holder = new NpgsqlConnection(Database);
        await holder.OpenAsync();
        var held = await holder.BeginTransactionAsync();
        await using (var take = new NpgsqlCommand($"SELECT pg_advisory_xact_lock({PersistenceSchema.LockKey})", holder, held))
            await take.ExecuteNonQueryAsync();

        var init = PersistenceSchema.InitializeAsync(System("waiting"), Options, TimeSpan.FromSeconds(60));
        await Task.Delay(TimeSpan.FromSeconds(3));
        Assert.False(init.IsCompleted, init.Exception?.ToString() ?? "it finished while the lock was held");
        Assert.Empty(ExistingTables());

        await held.CommitAsync();
        await init.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(Tables.Order(), ExistingTables().Order());
    }

    [Fact]
    public async Task Four_nodes_that_start_together_on_a_fresh_database_all_get_working_plugins()
    {
        var starts = Enumerable.Range(0, 4)
            .Select(i => Task.Run(() => PersistenceSchema.InitializeAsync(System($"node{i}"), Options, TimeSpan.FromSeconds(60))))
            .ToArray();
        await Task.WhenAll(starts).WaitAsync(TimeSpan.FromSeconds(120));
        Assert.Equal(Tables.Order(), ExistingTables().Order());
    }

    [Fact]
    public async Task A_lock_held_past_the_start_up_time_is_refused_with_the_reason()
    {
        await using var holder = new NpgsqlConnection(Database);
        await holder.OpenAsync();
        await using var held = await holder.BeginTransactionAsync();
        await using (var take = new NpgsqlCommand($"SELECT pg_advisory_xact_lock({PersistenceSchema.LockKey})", holder, held))
            await take.ExecuteNonQueryAsync();

        var e = await Assert.ThrowsAsync<PersistenceUnavailableException>(() =>
            PersistenceSchema.InitializeAsync(System("late"), Options, TimeSpan.FromSeconds(2)));
        Assert.Contains("schema lock", e.Message);
        Assert.DoesNotContain("Password", e.Message, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>
    /// The wait for the lock is the start-up's to bound, not the connection's command timeout (30 s
    /// by default: a loaded CI run saw a node fail with "Exception while reading from stream" after
    /// 28 s of a 60 s start-up). Here the command timeout is 1 s and the lock is held 4 s.
    /// </summary>
    [Fact]
    public async Task A_lock_held_past_the_command_timeout_but_within_the_start_up_time_is_waited_for()
    {
        await using var holder = new NpgsqlConnection(Database);
        await holder.OpenAsync();
        var held = await holder.BeginTransactionAsync();
        await using (var take = new NpgsqlCommand($"SELECT pg_advisory_xact_lock({PersistenceSchema.LockKey})", holder, held))
            await take.ExecuteNonQueryAsync();
        var release = Task.Delay(TimeSpan.FromSeconds(4)).ContinueWith(async _ => await held.CommitAsync()).Unwrap();

        var clock = global::System.Diagnostics.Stopwatch.StartNew();
        await PersistenceSchema.InitializeAsync(System("patient"), PersistenceOptions.Postgres(Database + ";Command Timeout=1"), TimeSpan.FromSeconds(60));
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(3.5), $"it did not wait for the lock ({clock.Elapsed.TotalSeconds:F1} s)");
        await release;
    }

    private ActorSystem System(string name)
    {
        var dir = Path.Combine(Path.GetTempPath(), db);
        var options = new NodeOptions { Persistence = Options, StoreDir = Path.Combine(dir, "blobs"), RunsDir = Path.Combine(dir, "runs"), LogLevel = "WARNING" };
        var config = ConfigurationFactory.ParseString("akka.actor.provider = local").WithFallback(HoconBuilder.Build(options));
        var system = ActorSystem.Create(name, config);
        lock (systems) systems.Add(system);
        return system;
    }

    private List<string> ExistingTables()
    {
        using var c = new NpgsqlConnection(Database);
        c.Open();
        using var cmd = new NpgsqlCommand("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'", c);
        using var reader = cmd.ExecuteReader();
        var names = new List<string>();
        while (reader.Read()) names.Add(reader.GetString(0));
        return names.Where(Tables.Contains).ToList();
    }

    private static void Execute(string connectionString, string sql)
    {
        using var c = new NpgsqlConnection(connectionString);
        c.Open();
        using var cmd = new NpgsqlCommand(sql, c);
        cmd.ExecuteNonQuery();
    }

    public void Dispose()
    {
        foreach (var s in systems) s.Terminate().Wait(TimeSpan.FromSeconds(10));
        NpgsqlConnection.ClearAllPools();
        Execute(server, $"DROP DATABASE IF EXISTS {db} WITH (FORCE)");
    }
}
