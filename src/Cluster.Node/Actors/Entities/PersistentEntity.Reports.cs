using Akka.Actor;
using Cluster.Contracts.Events;
using Cluster.Contracts.Runs;

namespace Cluster.Node.Actors;

/// <summary>
/// Metrics rows and sample grids, delivered at least once. Each is journaled before it is sent
/// (<see cref="ReportQueued"/>) and held until the coordinator acknowledges it, and the held ones are
/// sent again every few seconds and whenever the coordinator says it misses one. So a coordinator
/// that is down (a seed restarting) or moving, and the entity's own restart, leave no hole in
/// metrics.csv; the coordinator skips a report it already has (<see cref="ReportLedger"/>).
/// </summary>
public abstract partial class PersistentEntity
{
    /// <summary>Sends the held reports again (a timer's tick).</summary>
    private sealed record ResendReports : INoSerializationVerificationNeeded
    {
        public static readonly ResendReports Instance = new();
    }

    /// <summary>How often held reports go out again while the coordinator does not acknowledge them.</summary>
    private static readonly TimeSpan ResendEvery = TimeSpan.FromSeconds(5);

    /// <summary>The most held reports sent at once; the coordinator takes them in order, and the rest follow its acknowledgement.</summary>
    private const int ResendBurst = 500;

    private long lastReport;
    private DateTime lastResendUtc = DateTime.MinValue;
    /// <summary>The UpToSeq of the last answer that said a report was missing, which the held ones answered.</summary>
    private long lastMissing = -1;

    /// <summary>After recovery: what it held before is sent again, and the periodic resend starts.</summary>
    private void StartReporting()
    {
        lastReport = State.LastReport;
        Timers.StartPeriodicTimer("reports", ResendReports.Instance, ResendEvery);
        if (State.Outbox.Count > 0) ResendHeld();
    }

    /// <summary>A metrics row, numbered, to be journaled (alone, <see cref="Report(RunMetrics)"/>, or with other events).</summary>
    protected ReportQueued Queued(RunMetrics m) => new(m with { Report = NextHeader() }, null);

    /// <summary>A sample grid, numbered, as <see cref="Queued(RunMetrics)"/>.</summary>
    protected ReportQueued Queued(RunSamples s) => new(null, s with { Report = NextHeader() });

    private ReportHeader NextHeader() => new(++lastReport, 0, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());

    /// <summary>Journals a metrics row and then sends it. Does not hold other commands back meanwhile.</summary>
    protected void Report(RunMetrics m) => PersistAsync(Queued(m), Sent);

    /// <summary>A journaled report: held, then sent. The handler of every persisted <see cref="ReportQueued"/>.</summary>
    protected void Sent(ReportQueued q)
    {
        State = State.Apply(q);
        Send(q, State.HeldBefore(q.Header.Seq));
        MaybeSnapshot(50);
    }

    /// <param name="previous">the nearest earlier report the entity holds (<see cref="ReportHeader.Previous"/>)</param>
    private void Send(ReportQueued q, long previous)
    {
        var h = q.Header;
        var header = h with { Previous = previous, AgeSeconds = Math.Max(0, (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - h.MadeUnixMs) / 1000.0) };
        if (q.Metrics is { } m) Services.Coordinator.Tell(m with { Report = header });
        else if (q.Samples is { } s) Services.Coordinator.Tell(s with { Report = header });
    }

    /// <summary>
    /// Sends every held report again, oldest first: before a message that ends a phase
    /// (StudentFinished, TeacherReady), so that the coordinator has the rows before the end.
    /// </summary>
    protected void ResendHeld()
    {
        lastResendUtc = DateTime.UtcNow;
        // in order, so each one's previous held report is the one sent before it (no scan of the outbox per report)
        long previous = 0;
        foreach (var (seq, q) in State.Outbox.Take(ResendBurst))
        {
            Send(q, previous);
            previous = seq;
        }
    }

    private void OnReportsReceived(ReportsReceived r)
    {
        State = State.Acknowledge(r.UpToSeq);
        // the coordinator misses the report after UpToSeq (lost while it was away): the held ones go
        // again. Each report sent while it missed one gets that answer: one resend answers them all,
        // and the same gap is asked about again at most once a second
        if (!r.Missing || State.Outbox.Count == 0) return;
        if (r.UpToSeq == lastMissing && DateTime.UtcNow - lastResendUtc < TimeSpan.FromSeconds(1)) return;
        lastMissing = r.UpToSeq;
        ResendHeld();
    }
}
