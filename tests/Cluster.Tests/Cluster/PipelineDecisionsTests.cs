using Cluster.Contracts.Events;
using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;
using Cluster.Node.Actors;
using Distill.Engine.Methods;
using Distill.Engine.Pipeline;
using Distill.Engine.Specs;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The source and student entities' decisions without an actor: the plan a method gives, a
/// replica's batch intake, the replicas' lockstep, group commit and release, and the all-reduce's
/// bookkeeping. Expected values are worked out by hand in the comments.
/// </summary>
public sealed class PipelineDecisionsTests
{
    private static readonly BatchPlan Steps = BatchPlan.OnePerStep(10);
    /// <summary>3 rounds of 60 iterations, 4 student steps each (12 steps), competing with the student (ADI).</summary>
    private static readonly BatchPlan Adi = BatchPlan.PooledRounds(3, 4, 60, 8, competes: true);
    private static readonly BatchPlan Di = BatchPlan.PooledRounds(3, 4, 60, 8, competes: false);

    [Fact]
    public void Should_map_steps_onto_batches_for_both_shapes_of_plan()
    {
        Assert.Equal((7L, 7L), Steps.BatchesFor(7));
        // step 5 is the first of round 2 (steps 1-4 round 1): it samples rounds 1..2
        Assert.Equal((1L, 1L), Adi.BatchesFor(4));
        Assert.Equal((1L, 2L), Adi.BatchesFor(5));
        Assert.Equal((1L, 3L), Adi.BatchesFor(12));
        Assert.Equal(12, Adi.TotalSteps);
        // window 3: a step plan asks up to step + 3, capped by the run; rounds ask one ahead without competition, none with it
        Assert.Equal(5, Steps.RequestUpTo(2, 3));
        Assert.Equal(10, Steps.RequestUpTo(9, 3));
        Assert.Equal(3, Di.RequestUpTo(4, 3));    // next step 5 reads round 2, +2 capped at 3
        Assert.Equal(2, Di.RequestUpTo(0, 2));
        Assert.Equal(2, Adi.RequestUpTo(4, 3));
        // release: a step plan drops what a checkpoint covers; rounds are never released
        Assert.Equal(6, Steps.ReleasableAt(6));
        Assert.Equal(0, Adi.ReleasableAt(8));
    }

    [Fact]
    public void Should_ask_for_the_students_weights_only_where_a_round_competes_with_it()
    {
        Assert.Null(Adi.StudentStepFor(1));          // round 1 competes with the initial student
        Assert.Equal(4, Adi.StudentStepFor(2));
        Assert.Equal(8, Adi.StudentStepFor(3));
        Assert.Null(Adi.StudentStepFor(4));          // beyond the run
        Assert.Null(Di.StudentStepFor(2));
        Assert.Null(Steps.StudentStepFor(2));
        Assert.Equal(2, Adi.BatchNeedingWeightsAfter(4));
        Assert.Equal(3, Adi.BatchNeedingWeightsAfter(8));
        Assert.Null(Adi.BatchNeedingWeightsAfter(12));   // the last step: no round after it
        Assert.Null(Adi.BatchNeedingWeightsAfter(5));
        Assert.Null(Di.BatchNeedingWeightsAfter(4));
    }

    [Fact]
    public void Should_hold_in_memory_only_batches_that_can_be_made_again_cheaply_and_write_the_oldest_beyond_the_limit()
    {
        var cluster = new ClusterSpec();
        Assert.True(SourceDecisions.HoldInMemory(cluster, Steps, 2));
        Assert.False(SourceDecisions.HoldInMemory(cluster with { BatchMemoryMb = 0 }, Steps, 2));
        Assert.False(SourceDecisions.HoldInMemory(cluster, Di, 2));       // a round of many units
        Assert.False(SourceDecisions.HoldInMemory(cluster, Adi, 2));      // and one against the student's weights
        (long, long)[] held = [(7, 40), (5, 30), (6, 50)];
        Assert.Empty(SourceDecisions.ToWrite(held, 120));
        Assert.Equal([5L], SourceDecisions.ToWrite(held, 119));
        Assert.Equal([5L], SourceDecisions.ToWrite(held, 90));
        Assert.Equal([5L, 6L], SourceDecisions.ToWrite(held, 89));
        Assert.Equal([5L, 6L, 7L], SourceDecisions.ToWrite(held, 0));
    }

    [Fact]
    public void Should_draw_a_sample_grid_where_the_engine_loop_evaluates()
    {
        // a batch per step, evaluated every 4: grids at batches 4, 8 and the last (10)
        Assert.Equal([4L, 8, 10], Enumerable.Range(1, 10).Select(b => (long)b).Where(b => Steps.GridDue(b, 4)));
        // rounds of 4 steps evaluated every 4 steps: every round
        Assert.All(new long[] { 1, 2, 3 }, b => Assert.True(Adi.GridDue(b, 4)));
    }

    [Fact]
    public void Should_take_each_batch_once_in_its_window_and_drop_it_after_its_step()
    {
        var i = BatchIntake.At(Steps, 3);            // restored at step 3: asks from batch 4
        Assert.Equal(3, i.RequestedUpTo);
        var (i2, r) = i.RequestMore(3, 2);
        Assert.Equal(new BatchRequest(4, 2), r);
        Assert.Null(i2.RequestMore(3, 2).Request);   // enough asked
        Assert.False(i2.Accepts(3, 3));              // trained already
        Assert.False(i2.Accepts(6, 3));              // not asked for
        Assert.True(i2.Accepts(5, 3));
        i2 = i2.Receive(5);
        Assert.False(i2.Accepts(5, 3));              // a duplicate
        Assert.False(i2.Ready(3));                   // step 4 needs batch 4
        Assert.Equal(new BatchRequest(4, 2), i2.AskAgain(3));
        i2 = i2.Receive(4);
        Assert.True(i2.Ready(3));
        i2 = i2.Trained(4);
        Assert.Equal([5L], i2.Received);
        // a rollback to step 2: batches 3.. are asked for again
        var back = i2.RolledBack(2);
        Assert.Empty(back.Received);
        Assert.Equal(new BatchRequest(3, 2), back.RequestMore(2, 2).Request);
    }

    [Fact]
    public void Should_keep_every_round_for_every_later_step_and_across_a_rollback()
    {
        var i = BatchIntake.At(Di, 0);
        Assert.Equal(0, i.RequestedUpTo);
        (i, var r) = i.RequestMore(0, 2);
        Assert.Equal(new BatchRequest(1, 2), r);
        i = i.Receive(2);
        Assert.False(i.Ready(0));                    // step 1 needs round 1
        i = i.Receive(1);
        Assert.True(i.Ready(0));
        i = i.Trained(4);
        Assert.Equal([1L, 2], i.Received);           // step 5 samples rounds 1 and 2
        Assert.True(i.Ready(4));
        Assert.False(i.Accepts(1, 4));               // a duplicate of a round kept
        Assert.Same(i, i.RolledBack(2));
        Assert.False(i.Ready(12));                   // the run is over
    }

    [Theory]
    [InlineData(10, 1.0, null, 9, 1.0, false, PeerAnswer.RollBack)]      // the peer is behind
    [InlineData(10, 1.0, null, 10, 0.5, false, PeerAnswer.RollBack)]     // same step, its guard lowered the rate
    [InlineData(10, 0.5, null, 10, 1.0, true, PeerAnswer.ResendGradient)]
    [InlineData(10, 1.0, null, 10, 1.0, false, PeerAnswer.None)]
    [InlineData(10, 1.0, null, 12, 1.0, false, PeerAnswer.Announce)]    // ahead: it comes back to us
    [InlineData(10, 1.0, 6L, 8, 1.0, false, PeerAnswer.None)]           // already going back to 6: the peer hears our step after it
    [InlineData(10, 1.0, 6L, 5, 1.0, false, PeerAnswer.RollBack)]
    public void Should_keep_replicas_in_lockstep(long step, double scale, long? rollingBackTo, long peer, double peerScale, bool own, PeerAnswer expected) =>
        Assert.Equal(expected, ReplicaDecisions.OnPeerAt(step, scale, rollingBackTo, peer, peerScale, own));

    [Fact]
    public void Should_roll_back_to_the_lower_scale_and_give_up_after_the_guards_limit()
    {
        Assert.Equal((7L, 0.25), ReplicaDecisions.RollbackTo(7, 0.5, 0.25));
        var g = new GuardSpec { MaxRollbacks = 2 };
        Assert.True(DivergenceGuard.MayRollBack(g, 0));
        Assert.True(DivergenceGuard.MayRollBack(g, 1));
        Assert.False(DivergenceGuard.MayRollBack(g, 2));
        Assert.False(DivergenceGuard.MayRollBack(g with { Enabled = false }, 0));
    }

    [Fact]
    public void Should_group_commit_release_and_schedule_the_source()
    {
        Assert.Equal(1, SourceDecisions.MaxGroup(2));
        Assert.Equal(6, SourceDecisions.MaxGroup(8));
        // a one-unit batch waits for the next while it is being made and the group has room
        Assert.False(SourceDecisions.StoreNow(false, 1, nextStarted: true, unstored: 2, maxGroup: 6));
        Assert.True(SourceDecisions.StoreNow(false, 1, nextStarted: false, 2, 6));
        Assert.True(SourceDecisions.StoreNow(false, 1, true, 6, 6));
        Assert.True(SourceDecisions.StoreNow(true, 1, true, 1, 6));
        Assert.True(SourceDecisions.StoreNow(false, 60, true, 1, 6));   // rounds are long: stored at once
        var released = new Dictionary<string, long> { ["r/student/0"] = 8 };
        Assert.Null(SourceDecisions.ReleaseUpTo(released, 2, 0));       // the other replica has not released
        released["r/student/1"] = 6;
        Assert.Equal(6, SourceDecisions.ReleaseUpTo(released, 2, 0));
        Assert.Null(SourceDecisions.ReleaseUpTo(released, 2, 6));
        Assert.Equal(5, SourceDecisions.NextToMake(made: 4, produced: 3, lastWanted: 6));
        Assert.Null(SourceDecisions.NextToMake(4, 4, 4));
        Assert.Null(SourceDecisions.NextToMake(4, 4, null));
        // checkpoints: a quarter of a round; the student's interval for a generator
        Assert.Equal(15, SourceDecisions.CheckpointEvery(new ClusterSpec(), Adi, 4));
        Assert.Equal(4, SourceDecisions.CheckpointEvery(new ClusterSpec(), Steps, 4));
        Assert.Equal(10, SourceDecisions.CheckpointEvery(new ClusterSpec { GeneratorCheckpointEvery = 10 }, Adi, 4));
        Assert.True(SourceDecisions.CheckpointDue(30, 15, false));
        Assert.False(SourceDecisions.CheckpointDue(31, 15, false));
        Assert.True(SourceDecisions.CheckpointDue(31, 15, true));
        // 100 ms slices at 4 ms a unit: 25 units
        Assert.Equal(25, SourceDecisions.UnitsPerJob(TimeSpan.FromMilliseconds(100), 0.004));
        Assert.Equal(1, SourceDecisions.UnitsPerJob(TimeSpan.FromMilliseconds(100), 0));
    }

    [Fact]
    public void Should_build_the_rebuilder_again_only_when_it_cannot_go_forward_to_the_batch_or_a_checkpoint_is_nearer()
    {
        Assert.True(SourceDecisions.ReopenRebuilder(null, null, 5, null));    // none yet
        Assert.False(SourceDecisions.ReopenRebuilder(3, 0, 5, null));         // at 3: replays 4, makes 5
        Assert.False(SourceDecisions.ReopenRebuilder(4, 0, 5, 3));            // at 4, the checkpoint at 3 is behind it
        Assert.False(SourceDecisions.ReopenRebuilder(3, 3, 5, 3));            // restored at that checkpoint
        Assert.True(SourceDecisions.ReopenRebuilder(3, 1, 5, 3));             // replayed to it: it may have been a guard rollback's
        Assert.True(SourceDecisions.ReopenRebuilder(1, 0, 5, 3));             // the checkpoint at 3 is nearer than 1
        Assert.True(SourceDecisions.ReopenRebuilder(5, 0, 5, 3));             // made 5 already: it cannot go back
        Assert.True(SourceDecisions.ReopenRebuilder(7, 0, 2, null));          // past it: again from the seed
    }

    [Fact]
    public void Should_take_a_collapsed_source_back_to_its_newest_whole_batch_checkpoint_before_its_last_healthy_batch()
    {
        CheckpointWritten C(long step, long seq) => new(step, seq, $"blob{step}", null, 0);
        var list = new[] { C(500, 500), C(1000, 1000), C(1500, 1500) };
        Assert.Equal(1000, SourceDecisions.RollbackTarget(list, 1450, 1)!.Seq);   // 1500 came after the last check that passed
        Assert.Equal(1000, SourceDecisions.RollbackTarget(list, 1500, 1)!.Seq);   // batch 1500 passed, the state after it is untested
        Assert.Equal(1500, SourceDecisions.RollbackTarget(list, 1550, 1)!.Seq);
        Assert.Null(SourceDecisions.RollbackTarget(list, 500, 1));                // none before: the initial state
        // rounds of 8 units: a checkpoint part-way through a round is not a state between batches
        var rounds = new[] { C(16, 2), C(20, 2), C(22, 2) };
        Assert.Equal(16, SourceDecisions.RollbackTarget(rounds, 3, 8)!.Step);
        Assert.Null(SourceDecisions.RollbackTarget(rounds, 2, 8));
        // a collapse again before any check passes: back to the rollback's checkpoint (the weights after 1000), not to the start
        var again = list.Append(new CheckpointWritten(1650, 1650, "r", null, 0, Rollback: true)).ToArray();
        Assert.Equal(1650, SourceDecisions.RollbackTarget(again, 1600, 1)!.Seq);
        Assert.Equal(1650, SourceDecisions.RollbackTarget(new[] { again[^1] }, 0, 1)!.Seq);

        // after a restart, the last batch that passed comes from the journal: checks at every 50th
        // batch, the ones that failed journaled with their rollback's checkpoint
        var journal = new[] { C(500, 500), C(1000, 1000), new CheckpointWritten(1050, 1050, "r1", null, 0, Rollback: true), new CheckpointWritten(1100, 1100, "r2", null, 0, Rollback: true) };
        Assert.Equal(1000, SourceDecisions.LastHealthy(1120, 50, journal));   // 1100 and 1050 failed
        Assert.Equal(1150, SourceDecisions.LastHealthy(1199, 50, journal));
        Assert.Equal(0, SourceDecisions.LastHealthy(49, 50, journal));
    }

    [Fact]
    public void Should_keep_the_newest_checkpoints_and_every_guard_rollbacks_for_good()
    {
        var state = EntityState.Empty;
        foreach (var (seq, rollback) in new[] { (3L, false), (4L, true), (6L, false), (9L, false), (10L, true), (12L, false), (15L, false), (18L, false) })
            state = state.Apply(new CheckpointWritten(seq, seq, $"b{seq}", null, 0, Rollback: rollback));
        // replay from before a rollback would miss it: 4 and 10 stay, with the newest three ordinary ones
        Assert.Equal([4L, 10L, 12L, 15L, 18L], state.Checkpoints.Select(c => c.Seq));
        // rollbacks in a row push out no ordinary checkpoint (the one they went back to may be among them)
        foreach (var seq in new long[] { 19, 20 }) state = state.Apply(new CheckpointWritten(seq, seq, $"b{seq}", null, 0, Rollback: true));
        Assert.Equal([4L, 10L, 12L, 15L, 18L, 19L, 20L], state.Checkpoints.Select(c => c.Seq));
    }
}
