using Akka.Actor;
using Cluster.Contracts;
using Cluster.Contracts.Runs;

namespace Cluster.Node.Hosting;

/// <summary>Submits runs to the coordinator and follows them (the run, submit and status commands).</summary>
public static class RunClient
{
    public static async Task<string> SubmitAsync(IActorRef coordinator, string specFile, string? runId, TimeSpan timeout) =>
        await SubmitAsync(coordinator, await File.ReadAllTextAsync(specFile), specFile, runId, timeout);

    /// <summary>Submits a spec's text; specFile names it in messages.</summary>
    public static async Task<string> SubmitAsync(IActorRef coordinator, string yaml, string specFile, string? runId, TimeSpan timeout)
    {
        var answer = await coordinator.Ask<IRunCommand>(new SubmitRun(yaml, specFile, runId), timeout);
        return answer switch
        {
            RunAccepted a => a.RunId,
            RunRejected r => throw new InvalidOperationException(r.Reason),
            _ => throw new InvalidOperationException($"unexpected answer {answer.GetType().Name}"),
        };
    }

    /// <summary>Cancels a run for good; the answer says its state (Cancelled, or how it had ended).</summary>
    public static async Task<CancelAnswer> CancelAsync(IActorRef coordinator, string runId, string reason, TimeSpan timeout) =>
        await coordinator.Ask<IRunCommand>(new CancelRun(runId, reason), timeout) switch
        {
            CancelAnswer a => a,
            RunRejected r => throw new InvalidOperationException(r.Reason),
            var other => throw new InvalidOperationException($"unexpected answer {other.GetType().Name}"),
        };

    /// <summary>The runs' status; <see cref="CoordinatorUnavailableException"/> while the coordinator waits for its journal.</summary>
    public static async Task<RunSummary[]> StatusAsync(IActorRef coordinator, string? runId, TimeSpan timeout, CancellationToken ct = default) =>
        await coordinator.Ask<IRunCommand>(new GetRunStatus(runId), timeout, ct) switch
        {
            RunStatusReport r => r.Runs,
            RunRejected r => throw new CoordinatorUnavailableException(r.Reason),
            var other => throw new InvalidOperationException($"unexpected answer {other.GetType().Name}"),
        };

    /// <summary>A run's status line, as `status` prints it.</summary>
    public static string Format(RunSummary s) =>
        $"[{s.RunId}] {s.State.Name()} step {s.StudentStep}/{s.TotalSteps}" +
        // the source is a generator, DeepInversion's rounds or a loader of real data: its words fit all three
        // an ended run's counts are its last report's (none after a restart), not what it holds
        (s.State.Ended() ? ""
            : $" batches: {s.GeneratedBatches} made, {s.PoolBatches} pooled, {s.GeneratorQueue} queued, {s.StudentInFlight} at the student") +
        (s.TeacherAccuracy is { } t ? $" teacher {t:F2}%" : "") +
        (s.StudentAccuracy is { } a ? $" student {a:F2}%" : "") +
        (s.Node is { } n ? $" on {n}" : "") +
        (s.GeneratorNode is { } g && g != s.Node ? $" (source on {g})" : "") +
        (s.Message is { } m ? $" ({m})" : "");
}

/// <summary>The coordinator answered that it cannot work now (its journal is unavailable); asking again later may succeed.</summary>
public sealed class CoordinatorUnavailableException(string reason) : Exception(reason);
