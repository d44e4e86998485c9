using Akka.Actor;
using Akka.Persistence;
using Cluster.Node.Configuration;

namespace Cluster.Node.Hosting;

/// <summary>
/// Starts the node's journals and snapshot stores, which create their tables (auto-initialize),
/// before the node joins. On PostgreSQL one node at a time does it, under a transaction-scoped
/// advisory lock: two nodes running the plugins' CREATE TABLE IF NOT EXISTS at once can fail in
/// one of them (42710 "type ... already exists"), and that node's plugin never serves.
/// </summary>
public static class PersistenceSchema
{
    /// <summary>The advisory lock's key in the database ("CDschema").</summary>
    public const long LockKey = 0x4344736368656d61;

    public static readonly string[] Journals = ["akka.persistence.journal.sql", "akka.persistence.journal.sharding"];
    public static readonly string[] SnapshotStores = ["akka.persistence.snapshot-store.sql", "akka.persistence.snapshot-store.sharding"];

    // an id no entity has: the probes read nothing and write nothing
    private const string ProbeId = "$schema-probe";

    public static async Task InitializeAsync(ActorSystem system, PersistenceOptions p, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await using var connection = p.Provider == "postgres" ? new Npgsql.NpgsqlConnection(p.ConnectionString) : null;
        await using var transaction = connection is null ? null : await LockAsync(connection, p, cts.Token);
        var persistence = Persistence.Instance.Apply(system);
        foreach (var id in Journals)
        {
            var answer = await Probe(id, persistence.JournalFor(id), r => new ReplayMessages(1, 0, 0, ProbeId, r), cts.Token);
            if (answer is ReplayMessagesFailure f) throw Failed(id, p, f.Cause);
        }
        foreach (var id in SnapshotStores)
        {
            var answer = await Probe(id, persistence.SnapshotStoreFor(id), r => new LoadSnapshot(ProbeId, SnapshotSelectionCriteria.None, 0), cts.Token);
            if (answer is LoadSnapshotFailed f) throw Failed(id, p, f.Cause);
        }
        if (transaction is not null) await transaction.CommitAsync(CancellationToken.None);
    }

    private static async Task<Npgsql.NpgsqlTransaction> LockAsync(Npgsql.NpgsqlConnection connection, PersistenceOptions p, CancellationToken ct)
    {
        try
        {
            await connection.OpenAsync(ct);
            var transaction = await connection.BeginTransactionAsync(ct);
            await using var cmd = connection.CreateCommand();
            cmd.Transaction = transaction;
            cmd.CommandText = $"SELECT pg_advisory_xact_lock({LockKey})";
            // the wait is the start-up's to bound (ct), not Npgsql's 30 s command timeout: under load
            // the nodes ahead may hold the lock longer, and a node then failed with "Exception while
            // reading from stream" well inside its start-up time
            cmd.CommandTimeout = 0;
            await cmd.ExecuteNonQueryAsync(ct);
            return transaction;
        }
        catch (OperationCanceledException e)
        {
            throw new PersistenceUnavailableException($"another node held the journal's schema lock for longer than the start-up allows ({p.RedactedConnectionString})", e);
        }
        catch (Exception e) when (e is Npgsql.NpgsqlException or InvalidOperationException)
        {
            throw new PersistenceUnavailableException($"could not take the journal's schema lock ({p.RedactedConnectionString}): {e.Message}", e);
        }
    }

    private static async Task<object> Probe(string id, IActorRef plugin, Func<IActorRef, object> message, CancellationToken ct)
    {
        try { return await plugin.Ask<object>(message, null, ct); }
        catch (OperationCanceledException e)
        {
            throw new PersistenceUnavailableException($"the persistence plugin {id} did not start (its tables could not be created or read); see the log above", e);
        }
    }

    private static PersistenceUnavailableException Failed(string id, PersistenceOptions p, Exception cause) =>
        new($"the persistence plugin {id} cannot read its tables ({p.RedactedConnectionString}): {cause.Message}", cause);
}
