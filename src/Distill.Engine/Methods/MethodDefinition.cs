using Distill.Engine.Models;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using static TorchSharp.torch;

namespace Distill.Engine.Methods;

/// <summary>Whether a method reads a teacher, and where it comes from.</summary>
public enum TeacherUse
{
    /// <summary>No teacher; a `teacher:` section is refused.</summary>
    None,
    /// <summary>A `teacher:` section (checkpoint or training) is required.</summary>
    Required,
    /// <summary>The student's own architecture trained normally (Tf-KD self); `teacher:` may say how.</summary>
    OwnArchitecture,
}

/// <summary>What a method's engine trainer is built from.</summary>
public sealed record MethodContext(RunSpec Spec, DataSplits Data, Device Device, Classifier Student, Classifier? Teacher);

/// <summary>
/// What a source is built from on the source entity's node (Teacher: when the source uses it;
/// NewStudent: the seeded initial student, for a source that competes with it).
/// </summary>
public sealed record SourceContext(RunSpec Spec, DataSplits Data, Device Device, Classifier? Teacher, Func<Classifier>? NewStudent = null);

/// <summary>
/// A method (SPEC.md): its spec name and section, what it needs, and how it trains. A method is
/// one file: a sealed subclass, found by <see cref="MethodRegistry"/>, and the record of its
/// section's keys (<see cref="SpecKeyAttribute"/>). The parser, the engine loop, the run
/// coordinator, `methods` and docs/methods.md all read it from there; nothing else branches on a
/// method's name.
/// </summary>
public abstract class MethodDefinition
{
    /// <summary>The spec's `method:` value.</summary>
    public abstract string Name { get; }
    /// <summary>One line for `methods` and the docs.</summary>
    public abstract string Summary { get; }
    /// <summary>Where the method is defined (SPEC.md section).</summary>
    public abstract string Reference { get; }

    /// <summary>The spec section the method reads (null: none) and its defaults. Methods may share a section name.</summary>
    public virtual string? SectionName => null;
    public virtual object? SectionDefaults => null;

    public virtual TeacherUse Teacher => TeacherUse.None;
    /// <summary>Whether the student learns from the dataset's training images (false: data-free).</summary>
    public virtual bool StudentSeesData => true;

    /// <summary>Checks that need more than the method's own section (the teacher's architecture, the replicas).</summary>
    public virtual IEnumerable<(string Key, string Reason)> Problems(RunSpec spec) => [];

    /// <summary>
    /// The trainer the engine loop steps (and that `run --engine` runs). By default the method's
    /// stepwise source, the teacher's labels where the objective needs them, and the student
    /// (<see cref="SourceTrainer"/>): the parts the actor pipeline runs.
    /// </summary>
    public virtual IStepTrainer CreateTrainer(MethodContext c)
    {
        var source = CreateSource(new SourceContext(c.Spec, c.Data, c.Device, SourceUsesTeacher ? c.Teacher : null))
                     ?? throw new InvalidOperationException($"method '{Name}' has no stepwise source: it defines its own engine loop");
        return new SourceTrainer(Name, source, c.Student, c.Spec.Student.Train, PipelineStudentSteps(c.Spec, c.Data.TrainX.shape[0]), Objective(c.Spec), c.Teacher);
    }

    /// <summary>Engine-loop steps between evaluations (0: only at the end).</summary>
    public virtual int EvalEvery(RunSpec spec) => spec.Student.Train.EvalEvery;
    /// <summary>Images in the sample grid drawn at each evaluation (0: none).</summary>
    public virtual int SampleGrid(RunSpec spec) => 0;
    /// <summary>Images synthesised by a run that took studentSteps student steps (result.json).</summary>
    public virtual long SynthesisedImages(RunSpec spec, long studentSteps) => 0;

    // The actor pipeline: a source entity makes the batches, the teacher entity labels them when the
    // objective needs the teacher's probabilities (and the source did not compute them), student
    // entities train. The engine loop is made of the same parts, so both compute the same numbers.

    /// <summary>The loss the student minimises.</summary>
    public abstract StudentObjective Objective(RunSpec spec);

    /// <summary>A source that makes batch after batch, one step each (null: the method has another kind of source, <see cref="CreateBatchSource"/>).</summary>
    public virtual IStepSource? CreateSource(SourceContext context) => null;

    /// <summary>The source entity's batch source: by default the stepwise source, a batch per unit of work.</summary>
    public virtual IBatchSource CreateBatchSource(SourceContext context) =>
        CreateSource(context) is { } s ? new StepBatchSource(s) : throw new InvalidOperationException($"method '{Name}' defines no source of batches");

    /// <summary>Whether the source needs the teacher (data-free synthesis).</summary>
    public virtual bool SourceUsesTeacher => false;

    /// <summary>How the batches map onto the student's steps (<see cref="BatchPlan"/>): by default batch s for step s.</summary>
    public virtual BatchPlan Plan(RunSpec spec, long trainImages) => BatchPlan.OnePerStep(PipelineStudentSteps(spec, trainImages));

    /// <summary>The plan for the spec's own dataset, where its size is known without reading it (0 otherwise: local idx files).</summary>
    public BatchPlan Plan(RunSpec spec) => Plan(spec, DataSplits.TrainImages(spec.Data) ?? 0);

    /// <summary>Images per batch the student's replicas split among them (null: the method's batches are not split).</summary>
    public virtual int? PipelineBatchSize(RunSpec spec) => null;

    /// <summary>The student's steps in the pipeline, for a training set of trainImages images.</summary>
    public abstract long PipelineStudentSteps(RunSpec spec, long trainImages);

    /// <summary>Student steps between the pipeline's evaluations (0: only at the end).</summary>
    public virtual int PipelineEvalEvery(RunSpec spec) => spec.Student.Train.EvalEvery;

    /// <summary>Whether step `step` of `total` is evaluated: every `every`-th (none for 0) and the last. The engine loop and the entities alike.</summary>
    public static bool EvaluationDue(long step, long every, long total) => every > 0 && step % every == 0 || step >= total;

    /// <summary>Whether the run has a teacher at all.</summary>
    public bool UsesTeacher => Teacher != TeacherUse.None;

    /// <summary>The teacher the spec names: its own section, the student's architecture (Tf-KD self), or none.</summary>
    public ModelSpec? TeacherOf(RunSpec spec) => Teacher switch
    {
        TeacherUse.Required => spec.Teacher,
        TeacherUse.OwnArchitecture => spec.Teacher ?? spec.Student with { Checkpoint = null },
        _ => null,
    };

    public override string ToString() => Name;
}
