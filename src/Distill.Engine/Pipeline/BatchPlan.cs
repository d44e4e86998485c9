namespace Distill.Engine.Pipeline;

/// <summary>
/// How a run's batches map onto its student's steps, which is all the source and student entities
/// need to know of a method to schedule, request, keep and release batches. Two shapes exist:
/// one batch per step (<see cref="OnePerStep"/>: DAFL, the noise baseline, every real-data
/// method) and rounds that each feed a run of steps sampling every round so far
/// (<see cref="PooledRounds"/>: DeepInversion, ADI). Pure: no tensors, no state.
/// </summary>
public abstract record BatchPlan(long TotalBatches, long TotalSteps)
{
    /// <summary>One batch per student step, trained once and released at the next checkpoint.</summary>
    public static BatchPlan OnePerStep(long steps) => new Stepwise(steps);

    /// <summary>`rounds` batches of `unitsPerBatch` units each; round k is followed by `stepsPerRound` student steps on batches drawn from rounds 1..k.</summary>
    public static BatchPlan PooledRounds(int rounds, int stepsPerRound, int unitsPerBatch, int studentBatch, bool competes) =>
        new Pooled(rounds, stepsPerRound, unitsPerBatch, studentBatch, competes);

    /// <summary>Student steps that start with each batch.</summary>
    public abstract long StepsPerBatch { get; }

    /// <summary>Units of source work in one batch (a generator step: 1; a DeepInversion round: its pixel iterations).</summary>
    public abstract int UnitsPerBatch { get; }

    /// <summary>Whether the student keeps a batch after training on it (later steps sample it again), so none is ever released.</summary>
    public abstract bool KeepsBatches { get; }

    /// <summary>Whether a batch's synthesis competes with the student as it stood at <see cref="StudentStepFor"/> (ADI).</summary>
    public abstract bool Competes { get; }

    /// <summary>The batches student step `step` (1-based) reads.</summary>
    public abstract (long First, long Last) BatchesFor(long step);

    /// <summary>The student step whose weights batch `batch` competes with (null: it needs none; the first competes with the initial student).</summary>
    public long? StudentStepFor(long batch) => Competes && batch > 1 && batch <= TotalBatches ? (batch - 1) * StepsPerBatch : null;

    /// <summary>The batch that needs the student's weights right after step `step` (null: none).</summary>
    public long? BatchNeedingWeightsAfter(long step)
    {
        if (!Competes || step <= 0 || step >= TotalSteps || step % StepsPerBatch != 0) return null;
        var batch = step / StepsPerBatch + 1;
        return StudentStepFor(batch) == step ? batch : null;
    }

    /// <summary>
    /// The last batch a student at `step` asks for with a window of `window`: what its next step
    /// reads, and window - 1 more so that the source works ahead (none where a batch competes with
    /// the student as it will be once the batches before it are trained).
    /// </summary>
    public long RequestUpTo(long step, int window) =>
        Math.Min(TotalBatches, BatchesFor(Math.Min(TotalSteps, step + 1)).Last + (Competes ? 0 : Math.Max(0, window - 1)));

    /// <summary>Batches the source may drop once every replica has a checkpoint at `step` (0: none).</summary>
    public long ReleasableAt(long step) => KeepsBatches || step <= 0 ? 0 : BatchesFor(step).Last;

    /// <summary>The batch whose making covers student step `step`'s evaluation, for its sample grid: the batch is due when it starts an evaluated step range.</summary>
    public bool GridDue(long batch, long evalEvery) =>
        batch == TotalBatches || evalEvery > 0 && (batch - 1) * StepsPerBatch / evalEvery != batch * StepsPerBatch / evalEvery;

    /// <summary>The student-side holder of received batches, on the compute thread.</summary>
    public abstract IStudentFeed CreateFeed(long seed);

    private sealed record Stepwise(long Steps) : BatchPlan(Steps, Steps)
    {
        public override long StepsPerBatch => 1;
        public override int UnitsPerBatch => 1;
        public override bool KeepsBatches => false;
        public override bool Competes => false;
        public override (long First, long Last) BatchesFor(long step) => (step, step);
        public override IStudentFeed CreateFeed(long seed) => new StepFeed();
    }

    private sealed record Pooled(int Rounds, int StepsPerRound, int Units, int StudentBatch, bool Compete)
        : BatchPlan(Rounds, (long)Rounds * StepsPerRound)
    {
        public override long StepsPerBatch => StepsPerRound;
        public override int UnitsPerBatch => Units;
        public override bool KeepsBatches => true;
        public override bool Competes => Compete;
        public override (long First, long Last) BatchesFor(long step) => (1, Math.Min(Rounds, (Math.Max(1, step) - 1) / Math.Max(1, StepsPerRound) + 1));
        public override IStudentFeed CreateFeed(long seed) => new PoolFeed(this, seed, StudentBatch);
    }
}
