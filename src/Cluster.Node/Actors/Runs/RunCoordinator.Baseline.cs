using Akka.Event;
using Distill.Engine.Runs;

namespace Cluster.Node.Actors;

/// <summary>
/// compare_baseline on the actors: the student alone is a run of its own (<see cref="RunIds.Baseline"/>),
/// submitted with its run, placed and resumed like any other, and taken along when its run is
/// cancelled or fails. Whichever of the two completes second puts the baseline's test accuracy
/// and errors into its run's result.json.
/// </summary>
public sealed partial class RunCoordinator
{
    private void BaselineAccepted(Cluster.Contracts.Events.RunSubmitted submitted)
    {
        var id = RunIds.Baseline(submitted.RunId);
        var spec = SpecOf(state.Runs[id]);
        var dir = Dir(id);
        dir.WriteSpec(spec);
        dir.Event($"run {id} accepted: compare_baseline of {submitted.RunId}, method {spec.Method.Name}, device {spec.Device}, seed {spec.Seed}");
        Dir(submitted.RunId).Event($"compare_baseline: the student alone is trained by the run {id}");
        WriteStatus(state.Runs[id], throttle: false);
    }

    /// <summary>A run that failed or was cancelled cancels its baseline's run.</summary>
    private void EndBaseline(string runId)
    {
        if (RunDecisions.BaselineEnds(state, runId, DateTime.UtcNow) is { } e)
            PersistAndSnapshot(e, () => Cancelled(e.RunId, e.Reason));
    }

    /// <summary>The baseline's run completed: its run's result.json, where written, gets its figures.</summary>
    private void BaselineInto(string runId, string baselineRunId)
    {
        var dir = Path.Combine(services.Options.RunsDir, runId);
        try
        {
            if (RunDirectory.ReadResult(dir) is { } result) RunDirectory.WriteResult(dir, WithBaseline(result, runId));
        }
        catch (Exception e) when (e is IOException or InvalidDataException)
        {
            log.Warning("run {0}: the baseline {1} is not in result.json: {2}", runId, baselineRunId, e.Message);
        }
    }

    /// <summary>A run's result with its baseline's test accuracy and errors, once the baseline's run has its own result.</summary>
    private RunResult WithBaseline(RunResult result, string runId)
    {
        var id = RunIds.Baseline(runId);
        if (!state.Runs.TryGetValue(id, out var b) || !b.Completed) return result;
        RunResult? baseline;
        try { baseline = RunDirectory.ReadResult(Path.Combine(services.Options.RunsDir, id)); }
        catch (Exception e) when (e is IOException or InvalidDataException)
        {
            log.Warning("run {0}: its baseline's result is unreadable: {1}", runId, e.Message);
            return result;
        }
        return baseline is null ? result : result with { BaselineAccuracy = baseline.StudentAccuracy, BaselineTestErrors = baseline.StudentTestErrors };
    }
}
