using Distill.Engine.Models;
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

    /// <summary>The trainer the engine loop steps (and that `run --engine` runs).</summary>
    public abstract IStepTrainer CreateTrainer(MethodContext context);

    /// <summary>Engine-loop steps between evaluations (0: only at the end).</summary>
    public virtual int EvalEvery(RunSpec spec) => spec.Student.Train.EvalEvery;
    /// <summary>Images in the sample grid drawn at each evaluation (0: none).</summary>
    public virtual int SampleGrid(RunSpec spec) => 0;
    /// <summary>Images synthesised by a run that took studentSteps student steps (result.json).</summary>
    public virtual long SynthesisedImages(RunSpec spec, long studentSteps) => 0;

    /// <summary>Whether the actor pipeline (generator, teacher, students) runs the method; the others run the engine loop.</summary>
    public virtual bool RunsOnActors => false;
    /// <summary>The student's steps in the actor pipeline.</summary>
    public virtual long PipelineStudentSteps(RunSpec spec) => 0;

    /// <summary>The teacher the spec names: its own section, the student's architecture (Tf-KD self), or none.</summary>
    public ModelSpec? TeacherOf(RunSpec spec) => Teacher switch
    {
        TeacherUse.Required => spec.Teacher,
        TeacherUse.OwnArchitecture => spec.Teacher ?? spec.Student with { Checkpoint = null },
        _ => null,
    };

    public override string ToString() => Name;
}
