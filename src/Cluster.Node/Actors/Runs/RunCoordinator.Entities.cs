using Akka.Event;
using Akka.Actor;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;

namespace Cluster.Node.Actors;

/// <summary>
/// A run's entities: started once admitted (and the teacher ready), stopped for good when the run
/// ends, and passivated while the run waits at its pause step (ASHA's rungs), where it gives up its
/// slot until a promotion queues it again with its next pause step.
/// </summary>
public sealed partial class RunCoordinator
{
    /// <summary>Every entity of the run stops and records that it finished, so that nothing (remember-entities, a late message) restarts it.</summary>
    private void StopEntities(RunRecord r)
    {
        services.Generators.Tell(new StopEntity(EntityId.Generator(r.RunId)));
        if (SpecOf(r).Method.UsesTeacher) services.Teachers.Tell(new StopEntity(EntityId.Teacher(r.RunId)));
        for (var i = 0; i < SpecOf(r).Cluster.Replicas; i++) services.Students.Tell(new StopEntity(EntityId.Student(r.RunId, i)));
    }

    /// <summary>Teacher first (for a method with one); once it is ready, the source and every student replica. Idempotent.</summary>
    private void StartEntities(RunRecord r)
    {
        if (r.Queued || r.Paused) return;
        var spec = SpecOf(r);
        if (spec.Method.UsesTeacher)
        {
            services.Teachers.Tell(new StartEntity(EntityId.Teacher(r.RunId), r.RunId, r.SpecYaml, r.TeacherBlob, r.HoldAt));
            if (r.TeacherBlob is null) return;
        }
        services.Generators.Tell(new StartEntity(EntityId.Generator(r.RunId), r.RunId, r.SpecYaml, r.TeacherBlob, r.HoldAt, r.Fork));
        for (var i = 0; i < spec.Cluster.Replicas; i++)
            services.Students.Tell(new StartEntity(EntityId.Student(r.RunId, i), r.RunId, r.SpecYaml, r.TeacherBlob, r.HoldAt, r.Fork));
    }

    /// <summary>The students reached the run's pause step (an ASHA rung): the run waits there, its slot free, its entities idle with their state.</summary>
    private void OnHeld(StudentHeld m)
    {
        if (RunDecisions.Held(state, m).Event is null) return;
        // the source's checkpoint right after the batches up to the pause step goes with the pause,
        // so that another run can begin there (PBT); a source that does not answer leaves it out
        var spec = SpecOf(state.Runs[m.RunId]);
        var seq = spec.Method.Plan(spec).BatchesFor(m.Step).Last;
        services.Generators.Ask<CheckpointAt>(new GetCheckpointAt(EntityId.Generator(m.RunId), seq), TimeSpan.FromSeconds(10))
            .PipeTo(Self, success: a => new HeldWithSource(m, a.Blob, true), failure: _ => new HeldWithSource(m, null, false));
    }

    /// <summary>A student's pause with the source's checkpoint there (null: none written there); Answered: whether the source said so in time.</summary>
    private sealed record HeldWithSource(StudentHeld Held, string? SourceBlob, bool Answered) : INoSerializationVerificationNeeded;

    private void OnHeldWithSource(HeldWithSource h)
    {
        var m = h.Held;
        // a source that did not answer (failing over): not paused yet; the held student reports again when the run nudges it
        if (!h.Answered) { log.Warning("run {0}: the source did not say where its checkpoint at step {1} is; the pause waits for the student's next report", m.RunId, m.Step); return; }
        if (RunDecisions.Held(state, m, h.SourceBlob).Event is not RunPaused e) return;
        PersistAndSnapshot(e, () =>
        {
            var r = state.Runs[m.RunId];
            Dir(m.RunId).Event($"paused at step {m.Step}{(m.Accuracy is { } a ? $" ({a:F2}%)" : "")}: waits for its sweep's scheduler to send it on or stop it");
            WriteStatus(r, throttle: false);
            PauseEntities(r);
            if (r.SweepId is { } sweep) services.Sweeps.Tell(new TrialRunPaused(sweep, r.RunId, m.Step, m.Accuracy, e.StudentBlob, e.SourceBlob));
            Admit();
        });
    }

    /// <summary>A paused run goes on: queued for a slot; once admitted its entities hear the new pause step.</summary>
    private void OnResume(ResumeRun m)
    {
        if (RunDecisions.Resume(state, m).Event is not RunResumed e) return;
        PersistAndSnapshot(e, () =>
        {
            Dir(m.RunId).Event(m.HoldAt is { } h ? $"sent on: goes on to step {h}" : "sent on: goes on to its end");
            WriteStatus(state.Runs[m.RunId], throttle: false);
            Admit();
        });
    }

    /// <summary>A paused run's entities passivate (their journals keep their state): a paused trial holds no memory.</summary>
    private void PauseEntities(RunRecord r)
    {
        services.Generators.Tell(new PauseEntity(EntityId.Generator(r.RunId)));
        if (SpecOf(r).Method.UsesTeacher) services.Teachers.Tell(new PauseEntity(EntityId.Teacher(r.RunId)));
        for (var i = 0; i < SpecOf(r).Cluster.Replicas; i++) services.Students.Tell(new PauseEntity(EntityId.Student(r.RunId, i)));
    }
}
