using Distill.Engine.Pipeline;
using Distill.Engine.Specs;
using Distill.Engine.Training;

namespace Distill.Engine.Methods;

/// <summary>
/// What every method that learns from real labelled data shares: the training set as the source
/// (<see cref="RealDataSource"/>), `student.train` as the length, and the engine loop
/// (<see cref="RealDataTrainer"/>). A method of this kind declares its section and its objective.
/// </summary>
public abstract class RealDataMethod : MethodDefinition
{
    public override IStepTrainer CreateTrainer(MethodContext c) =>
        new RealDataTrainer("student", c.Student, c.Data, c.Spec.Student.Train, Augmentation.For(c.Spec.Data, c.Spec.Student.Train), Objective(c.Spec), c.Device, c.Spec.Seed, c.Teacher);

    public override IStepSource CreateSource(SourceContext c) => new RealDataSource(c.Data, c.Spec.Student.Train.BatchSize, c.Device, c.Spec.Seed, Augmentation.For(c.Spec.Data, c.Spec.Student.Train));

    public override long PipelineStudentSteps(RunSpec spec, long trainImages) =>
        RealDataTrainer.TotalStepsOf(spec.Student.Train, trainImages / spec.Student.Train.BatchSize);

    public override int? PipelineBatchSize(RunSpec spec) => spec.Student.Train.BatchSize;
}
