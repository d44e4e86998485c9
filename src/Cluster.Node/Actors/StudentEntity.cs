using System.Collections.Immutable;
using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Akka.Persistence;
using Cluster.Contracts;
using Cluster.Contracts.Events;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Students;
using Cluster.Node.Hosting;
using Distill.Engine.Methods;
using Distill.Engine.Pipeline;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using static TorchSharp.torch;

namespace Cluster.Node.Actors;

/// <summary>
/// One replica of a run's student (sharded entity "run/student/r", remembered). It pulls labelled
/// batches in order with a bounded window, trains on them with the method's objective (replicas on their slice of each batch,
/// all-reducing gradients in replica order), evaluates, and checkpoints at the spec's interval.
/// After its node dies it comes back elsewhere from its newest good checkpoint and asks for the
/// batches after it, which the generator re-serves from its pool. DeepInversion / ADI: the batches
/// are rounds, kept in a <see cref="SyntheticPool"/>; step s trains on a batch drawn from rounds
/// 1..round(s) by a generator seeded with (seed, s), so replicas draw the same batch and a restored
/// student draws what it would have drawn (its random state is its step). ADI: at the end of each
/// round the student offers its weights, which the generator needs for the next round.
/// </summary>
public sealed class StudentEntity : PersistentEntity, IWithTimers
{
    public static Props GetProps(string entityId, NodeServices services) => Props.Create(() => new StudentEntity(entityId, services));

    private sealed record EngineReady(StudentTrainer Student, SyntheticPool? Pool, string? Warning, double Best, byte[]? Competitor) : INoSerializationVerificationNeeded;
    /// <summary>A step done; Competitor: ADI's weights at the end of a round, for the generator's next round.</summary>
    private sealed record Trained(long Seq, double? Loss, double? Accuracy, byte[]? Checkpoint, byte[]? Weights, double Lr, byte[]? Competitor = null)
        : INoSerializationVerificationNeeded;
    private sealed record GradientReady(long Seq, float[] Gradient) : INoSerializationVerificationNeeded;
    private sealed record RolledBack(long Step, string Reason, StudentTrainer? Fresh = null, bool Guard = true) : INoSerializationVerificationNeeded;
    /// <summary>Guard rollbacks by this incarnation (result.json's count; a node's death starts it again at 0).</summary>
    private int rollbacks;
    private bool lastRollbackScaled;

    private sealed record CheckStalled : INoSerializationVerificationNeeded
    {
        public static readonly CheckStalled Instance = new();
    }

    /// <summary>A request or batch lost with a dying generator or teacher is asked for again after this long.</summary>
    public static readonly TimeSpan StallTimeout = TimeSpan.FromSeconds(5);
    private DateTime lastBatchUtc = DateTime.UtcNow;
    public ITimerScheduler Timers { get; set; } = null!;

    /// <summary>This replica's index (its slice of each batch, its place in the reduction order).</summary>
    private readonly int replica;
    private RunSpec? spec;
    private StudentTrainer? student;
    private DataSplits? data;
    private bool busy;
    private long requestedUpTo;
    private double best = double.NegativeInfinity;
    private readonly SortedDictionary<long, LabelledBatch> buffer = [];
    /// <summary>DeepInversion: the rounds received (every step samples the whole pool so far).</summary>
    private readonly SortedSet<long> rounds = [];
    /// <summary>
    /// DeepInversion: rounds received and not yet handed to the compute thread's pool. Once handed
    /// over, the pool's tensors are the only copy (a round's payload is not kept twice).
    /// </summary>
    private readonly Dictionary<long, LabelledBatch> roundsToHand = [];
    /// <summary>DeepInversion: the pool on the compute thread (built with the student), and how many rounds were handed to it.</summary>
    private SyntheticPool? pool;
    private int poolRoundsQueued;
    /// <summary>ADI: the weights offered for the next round (sent again if the generator seems to have lost them).</summary>
    private CompetitorReady? competitorOffer;
    /// <summary>Gradient chunks by step, then replica: arrive in any order, summed in replica order.</summary>
    private readonly Dictionary<long, Dictionary<int, float[]>> gradients = [];
    /// <summary>Chunk indices received by step and replica (a chunk may come twice: a peer resends after a failover).</summary>
    private readonly Dictionary<long, Dictionary<int, (HashSet<int> Received, int Expected)>> chunksSeen = [];
    private readonly List<GradientChunk> early = [];
    /// <summary>Whether an engine job for the current step is queued or running (a rollback waits for it).</summary>
    private bool computing;
    /// <summary>A peer's step below ours that arrived while a job ran: roll back to it when the job is done.</summary>
    private (long Step, double LrScale, int From)? pendingRollback;
    /// <summary>Peer replicas' data-plane endpoints, as of their latest <see cref="ReplicaAt"/>.</summary>
    private readonly Dictionary<int, string?> peerEndpoints = [];

    public StudentEntity(string entityId, NodeServices services) : base(entityId, services)
    {
        replica = EntityId.Parse(entityId).Index;

        Command<StartEntity>(m =>
        {
            if (State.Started) { if (State.Finished) ReportFinishedAgain(); return; }
            // a method with a teacher starts its students once the teacher exists
            if (m.TeacherBlob is null && !NoTeacher(m.SpecYaml, m.RunId)) return;
            Persist(new EntityStarted(m.RunId, m.SpecYaml, m.TeacherBlob), e => { State = State.Apply(e); StartEngine(); });
        });
        Command<EngineReady>(OnEngineReady);
        Command<LabelledBatch>(OnBatch);
        Command<GradientReady>(OnOwnGradient);
        Command<GradientChunk>(OnChunk);
        Command<ReplicaAt>(OnReplicaAt);
        Command<Trained>(OnTrained);
        Command<Status.Failure>(f => OnStepFailed(f.Cause));
        Command<RolledBack>(OnRolledBack);
        Command<GetEntityStatus>(_ => Sender.Tell(new EntityStatus(Id, State.Started, student?.Step ?? 0, (student?.Step ?? 0) + 1,
            buffer.Count + rounds.Count, (int)Math.Max(0, requestedUpTo - (student?.Step ?? 0)), Services.NodeName, State.Finished ? "finished" : busy ? "training" : "waiting")));
        // the run ended (completed, failed or cancelled): recorded, so that no later message restarts the training
        Command<StopEntity>(_ =>
        {
            if (State.Finished || !State.Started) { Context.Parent.Tell(new Passivate(PoisonPill.Instance)); return; }
            Persist(new EntityFinished(student?.Step ?? 0), e =>
            {
                State = State.Apply(e);
                Context.Parent.Tell(new Passivate(PoisonPill.Instance));
            });
        });
        Command<CheckStalled>(_ =>
        {
            if (student is not null && !State.Finished && !student.Done && Replicas > 1 && busy && !computing && DateTime.UtcNow - lastBatchUtc >= StallTimeout)
            {
                // waiting on a peer's gradient: tell the missing peers where we are (this also starts a
                // replica whose node died, through remember-entities, and makes it answer)
                lastBatchUtc = DateTime.UtcNow;
                // a peer counts only with all its chunks: one whose node died part-way through sending is poked too
                var have = chunksSeen.TryGetValue(NextSeq, out var seen)
                    ? seen.Where(kv => kv.Value.Received.Count == kv.Value.Expected).Select(kv => kv.Key).ToHashSet() : [];
                Log.Info("{0}: waiting on the gradient of replicas {1} for step {2}", Id, string.Join(",", Enumerable.Range(0, Replicas).Where(r => !have.Contains(r))), NextSeq);
                AnnounceStep(peer => !have.Contains(peer));
                return;
            }
            if (student is null || busy || State.Finished || student.Done || HasBatchFor(NextSeq) || DateTime.UtcNow - lastBatchUtc < StallTimeout) return;
            // nothing arrived for a while: the generator or teacher may have died with our request; ask again (duplicates are dropped)
            lastBatchUtc = DateTime.UtcNow;
            var from = PoolMode ? Enumerable.Range(1, (int)RoundOf(NextSeq)).First(r => !rounds.Contains(r)) : NextSeq;
            Log.Info("{0}: no {1} {2} for {3:F0} s; asking the generator again", Id, PoolMode ? "round" : "batch", from, StallTimeout.TotalSeconds);
            if (competitorOffer is { } offer && offer.Round >= from) Services.Generators.Tell(offer);
            Services.Generators.Tell(new RequestBatches(EntityId.Generator(RunId), from, (int)Math.Max(1, requestedUpTo - from + 1), Id, Services.DataEndpoint));
        });
    }

    protected override void OnRecovered()
    {
        if (State.Started && !State.Finished) StartEngine();
    }

    private string RunId => State.RunId!;
    private int Replicas => spec!.Cluster.Replicas;
    private long Total => student!.TotalSteps;
    /// <summary>The method's evaluation interval (0: only at the end).</summary>
    private long EvalEvery => spec!.Method.PipelineEvalEvery(spec);
    private bool EvalDue(long step) => EvalEvery > 0 && step % EvalEvery == 0 || step >= Total;
    /// <summary>DeepInversion / ADI: the batches are rounds, pooled.</summary>
    private bool PoolMode => spec!.Method.PooledBatches;

    private static bool NoTeacher(string yaml, string runId)
    {
        try { return !EngineAccess.ParseSpec(yaml, runId).Method.UsesTeacher; }
        catch (SpecException) { return true; }   // StartEngine reports it
    }
    private bool Adaptive => spec!.Adaptive;
    /// <summary>The round whose student steps include `step` (1-based).</summary>
    private long RoundOf(long step) => Math.Min(spec!.DeepInversion!.Rounds, (step - 1) / spec!.DeepInversion!.StudentSteps + 1);
    private bool HasBatchFor(long step) => PoolMode ? Enumerable.Range(1, (int)RoundOf(step)).All(r => rounds.Contains(r)) : buffer.ContainsKey(step);
    private long CheckpointEvery => spec!.Cluster.CheckpointEvery > 0 ? spec.Cluster.CheckpointEvery : EvalEvery > 0 ? EvalEvery : GeneratorEntity.DefaultCheckpointEvery;
    private long NextSeq => student!.Step + 1;

    private void StartEngine()
    {
        try { spec = EngineAccess.ParseSpec(State.SpecYaml!, RunId); }
        catch (Exception e) { Fail($"spec unusable on this node: {e.Message}"); return; }
        if (replica >= spec.Cluster.Replicas) { Fail($"replica {replica} of a run with {spec.Cluster.Replicas} replicas"); return; }
        busy = true;
        var s = spec;
        var st = State;
        EngineAccess.Compute(() =>
        {
            var device = EngineAccess.DeviceFor(s);
            data = Services.Data(s.Data);
            var trainer = NewTrainer(s, device);
            var (step, warning) = Checkpoints.RestoreNewest(st.Checkpoints, Services.Blobs, trainer.LoadState, st.RunId!, Id);
            if (step == 0 && warning is not null)
            {
                // a failed load may have left part of a checkpoint in the model: start clean
                trainer.Model.Dispose();
                trainer.Dispose();
                trainer = NewTrainer(s, device);
            }
            var bestSoFar = st.Checkpoints.Where(c => c.Step <= trainer.Step).Select(c => c.BestAccuracy).DefaultIfEmpty(double.NegativeInfinity).Max();
            return new EngineReady(trainer, s.Method.PooledBatches ? new SyntheticPool() : null, warning, bestSoFar, CompetitorDue(s, trainer) ? EngineAccess.SaveModel(trainer.Model) : null);
        }).PipeTo(Self);
    }

    private void OnEngineReady(EngineReady r)
    {
        student = r.Student;
        pool = r.Pool;
        best = r.Best;
        busy = false;
        if (r.Warning is not null)
        {
            Log.Error(r.Warning);
            Services.Coordinator.Tell(new EntityProgress(RunId, Id, student.Step, Total, 0, 0, null, Services.NodeName, r.Warning));
        }
        Log.Info("{0}: student ready at step {1} of {2}", Id, student.Step, Total);
        requestedUpTo = PoolMode ? rounds.Count : student.Step;
        if (r.Competitor is not null) OfferCompetitor(r.Competitor);
        lastBatchUtc = DateTime.UtcNow;
        foreach (var c in early) OnChunk(c);
        early.Clear();
        Timers.StartPeriodicTimer("stalled", CheckStalled.Instance, StallTimeout, TimeSpan.FromSeconds(1));
        AnnounceStep(_ => true);
        RequestMore();
        TryTrain();
    }

    /// <summary>The seeded initial student every replica starts from (on the compute thread, once data is loaded).</summary>
    private StudentTrainer NewTrainer(RunSpec s, Device device) =>
        new(EngineAccess.NewStudent(s, data!, device), s.Student.Train, s.Method.PipelineStudentSteps(s, data!.TrainX.shape[0]), s.Method.Objective(s));

    /// <summary>ADI: at the end of a round (not the last), the generator needs these weights for the next one.</summary>
    private static bool CompetitorDue(RunSpec s, StudentTrainer t) =>
        s.Adaptive && t.Step > 0 && t.Step % s.DeepInversion!.StudentSteps == 0 && t.Step < t.TotalSteps;

    /// <summary>ADI: stores the weights as a blob (shared storage) and tells the generator which round they are for.</summary>
    private void OfferCompetitor(byte[] weights)
    {
        var step = student!.Step;
        var blob = Services.Blobs.Put(weights);
        competitorOffer = new CompetitorReady(EntityId.Generator(RunId), (int)(step / spec!.DeepInversion!.StudentSteps) + 1, step, blob);
        Services.Generators.Tell(competitorOffer);
    }

    /// <summary>Tells peer replicas this replica's step (see <see cref="ReplicaAt"/>).</summary>
    private void AnnounceStep(Func<int, bool> toPeer)
    {
        if (Replicas < 2) return;
        for (var peer = 0; peer < Replicas; peer++)
            if (peer != replica && toPeer(peer))
                Services.Students.Tell(new ReplicaAt(EntityId.Student(RunId, peer), replica, student!.Step, student.LrScale, Services.DataEndpoint));
    }

    private void OnReplicaAt(ReplicaAt m)
    {
        peerEndpoints[m.FromReplica] = m.DataEndpoint;
        if (student is null || State.Finished) return;   // it hears our step when we are ready
        var target = pendingRollback?.Step ?? student.Step;
        if (m.Step < target || m.Step == target && m.LrScale < student.LrScale)
        {
            Log.Warning("{0}: replica {1} is at step {2}, this one at {3}: rolling back to keep the replicas in lockstep", Id, m.FromReplica, m.Step, student.Step);
            pendingRollback = (m.Step, Math.Min(m.LrScale, student.LrScale), m.FromReplica);
            if (!computing) RollBackToPeer();
        }
        else if (m.Step > student.Step)
            AnnounceStep(peer => peer == m.FromReplica);
        else if (gradients.TryGetValue(NextSeq, out var slot) && slot.TryGetValue(replica, out var own))
            SendGradient(NextSeq, own, peer => peer == m.FromReplica);   // same step: our gradient may have died with its node
    }

    /// <summary>Restores the newest checkpoint at or before the peer's step (a fresh student before the first).</summary>
    private void RollBackToPeer()
    {
        var (step, scale, from) = pendingRollback!.Value;
        pendingRollback = null;
        RestoreCheckpoint(State.Checkpoints.Where(c => c.Step <= step).ToImmutableList(), freshBeforeFirst: true, t => t.LrScale = scale,
            (_, warning) => $"replica {from} resumed at step {step}" + (warning is null ? "" : $" ({warning})"), guard: false,
            $"rollback to replica {from}'s step {step}");
    }

    /// <summary>
    /// The one way the student goes back (the guard's rollback and the replicas' lockstep): on the
    /// compute thread, the newest loadable checkpoint of `usable`, or before the first one the
    /// seeded initial student every replica started from (where allowed); then `adjust` (learning-rate scale).
    /// </summary>
    private void RestoreCheckpoint(ImmutableList<CheckpointWritten> usable, bool freshBeforeFirst, Action<StudentTrainer> adjust,
        Func<long, string?, string> describe, bool guard, string what)
    {
        busy = true;
        computing = true;
        var current = student!;
        var sp = spec!;
        var runId = RunId;
        EngineAccess.Compute(() =>
        {
            var trainer = current;
            var (restored, warning) = Checkpoints.RestoreNewest(usable, Services.Blobs, trainer.LoadState, runId, Id);
            StudentTrainer? fresh = null;
            if (restored == 0)
            {
                if (!freshBeforeFirst) throw new InvalidOperationException($"no checkpoint to roll back to ({warning ?? "none written yet"})");
                fresh = NewTrainer(sp, EngineAccess.DeviceFor(sp));
                current.Model.Dispose();
                current.Dispose();
                trainer = fresh;
            }
            adjust(trainer);
            return new RolledBack(trainer.Step, describe(restored, warning), fresh, guard);
        }).PipeTo(Self, failure: e => new Status.Failure(new InvalidOperationException($"{what} failed: {e.Message}")));
    }

    /// <summary>Keeps at most Window batches requested and not yet trained: the backpressure.</summary>
    private void RequestMore()
    {
        if (PoolMode)
        {
            // rounds: the one this step needs, and for DeepInversion up to Window - 1 more, so the
            // generator synthesises the next round while this one trains (ADI cannot: the next
            // round competes with the student as it will be at the end of this one)
            var need = RoundOf(Math.Min(Total, NextSeq));
            var upTo = Math.Min(spec!.DeepInversion!.Rounds, need + (Adaptive ? 0 : Math.Max(0, spec!.Cluster.Window - 1)));
            if (upTo <= requestedUpTo) return;
            Services.Generators.Tell(new RequestBatches(EntityId.Generator(RunId), requestedUpTo + 1, (int)(upTo - requestedUpTo), Id, Services.DataEndpoint));
            requestedUpTo = upTo;
            return;
        }
        var target = Math.Min(Total, student!.Step + spec!.Cluster.Window);
        if (target <= requestedUpTo) return;
        Services.Generators.Tell(new RequestBatches(EntityId.Generator(RunId), requestedUpTo + 1, (int)(target - requestedUpTo), Id, Services.DataEndpoint));
        requestedUpTo = target;
    }

    private void OnBatch(LabelledBatch b)
    {
        if (student is null) return;
        if (PoolMode)
        {
            if (b.Seq < 1 || b.Seq > requestedUpTo || !rounds.Add(b.Seq)) return;   // a duplicate or stale delivery
            roundsToHand[b.Seq] = b;
            lastBatchUtc = DateTime.UtcNow;
            TryTrain();
            return;
        }
        if (b.Seq < NextSeq || b.Seq > requestedUpTo) return;   // a duplicate or stale delivery
        buffer[b.Seq] = b;
        lastBatchUtc = DateTime.UtcNow;
        TryTrain();
    }

    private void TryTrain()
    {
        if (busy || student is null || State.Finished || student.Done || !HasBatchFor(NextSeq)) return;
        busy = true;
        var sp = spec!;
        var s = student;
        var seq = NextSeq;
        computing = true;
        var batchFor = PoolMode ? PoolBatch(seq) : BufferedBatch(buffer[seq]);
        if (Replicas == 1)
        {
            EngineAccess.Compute(() =>
            {
                var batch = batchFor(EngineAccess.DeviceFor(sp));
                try { return AfterStep(seq, s.TrainStep(batch, wantLoss: seq % 25 == 0)); }
                finally { Dispose(batch); }
            }).PipeTo(Self);
            return;
        }
        var (r, n) = (replica, Replicas);
        EngineAccess.Compute(() =>
        {
            // this replica's contiguous slice of the batch
            var batch = batchFor(EngineAccess.DeviceFor(sp));
            var per = batch.Images.shape[0] / n;
            var slice = batch.Slice(r * per, per);
            try
            {
                var (g, _) = s.ComputeGradient(slice);
                using (g) return new GradientReady(seq, g.data<float>().ToArray());
            }
            finally
            {
                Dispose(slice);
                Dispose(batch);
            }
        }).PipeTo(Self);
    }

    /// <summary>Step seq trains on batch seq as it came (its true labels and the teacher's probabilities, where it has them).</summary>
    private static Func<Device, StudentBatch> BufferedBatch(LabelledBatch batch) =>
        device => new StudentBatch(TensorWire.ToTensor(batch.Images, device), batch.Labels is { } y ? TensorWire.ToLabels(y, device) : null,
            batch.SoftLabels is { } p ? TensorWire.ToTensor(p, device) : null, batch.Temperature);

    private static void Dispose(StudentBatch b)
    {
        b.Images.Dispose();
        b.Labels?.Dispose();
        b.SoftLabels?.Dispose();
    }

    /// <summary>
    /// DeepInversion: hands rounds the compute thread's pool lacks to it (jobs run in order), and
    /// draws step seq's batch from rounds 1..round(seq) there.
    /// </summary>
    private Func<Device, StudentBatch> PoolBatch(long seq)
    {
        var need = (int)RoundOf(seq);
        var fresh = Enumerable.Range(poolRoundsQueued + 1, Math.Max(0, need - poolRoundsQueued)).Select(k => roundsToHand[k]).ToList();
        foreach (var b in fresh) roundsToHand.Remove(b.Seq);
        poolRoundsQueued = Math.Max(poolRoundsQueued, need);
        var p = pool!;
        var di = spec!.DeepInversion!;
        var seed = spec!.Seed;
        return device =>
        {
            foreach (var b in fresh)
            {
                using var x = TensorWire.ToTensor(b.Images, CPU);
                using var y = TensorWire.ToTensor(b.SoftLabels ?? throw new InvalidDataException($"round {b.Seq} came without the teacher's probabilities"), CPU);
                p.Add((int)b.Seq, x, y);
            }
            var (images, probs) = p.Sample(seed, seq, di.StudentBatch, device, need);
            return new StudentBatch(images, null, probs, di.StudentTemperature);
        };
    }

    private void OnOwnGradient(GradientReady g)
    {
        computing = false;
        if (pendingRollback is not null) { RollBackToPeer(); return; }
        var flat = g.Gradient;
        SendGradient(g.Seq, flat, _ => true);
        Slot(g.Seq)[replica] = flat;
        Progress(g.Seq)[replica] = ([0], 1);
        TryReduce(g.Seq);
    }

    private void SendGradient(long step, float[] flat, Func<int, bool> toPeer)
    {
        var chunk = spec!.Cluster.GradientChunk;
        var count = (int)((flat.Length + chunk - 1) / chunk);
        for (var peer = 0; peer < Replicas; peer++)
        {
            if (peer == replica || !toPeer(peer)) continue;
            for (var c = 0; c < count; c++)
            {
                var offset = (long)c * chunk;
                var len = (int)Math.Min(chunk, flat.Length - offset);
                var bytes = new byte[len * 4];
                Buffer.BlockCopy(flat, (int)offset * 4, bytes, 0, bytes.Length);
                Services.SendToStudent(new GradientChunk(EntityId.Student(RunId, peer), step, replica, c, count, offset,
                    new Contracts.Tensors.TensorPayload([len], Contracts.Tensors.WireDType.Float32, bytes)), peerEndpoints.GetValueOrDefault(peer));
            }
        }
    }

    private Dictionary<int, float[]> Slot(long step) => gradients.TryGetValue(step, out var d) ? d : gradients[step] = [];

    private void OnChunk(GradientChunk c)
    {
        if (student is null) { early.Add(c); return; }   // a peer started first: keep its chunks until we are ready
        if (c.Step < NextSeq) return;   // late duplicate of a step already applied
        // peers step in lockstep: one may send the step after ours while our reduction still runs;
        // a later one comes from a peer that is ahead and about to roll back to us, so it is stale
        if (c.Step > NextSeq + 1) return;
        var size = student.GradientSize;
        var slot = Slot(c.Step);
        if (!slot.TryGetValue(c.FromReplica, out var flat)) slot[c.FromReplica] = flat = new float[size];
        if (c.Offset < 0 || c.Offset + c.Values.Data.Length / 4 > size)
        {
            Fail($"gradient chunk from replica {c.FromReplica} at offset {c.Offset} does not fit a model of {size} parameters");
            return;
        }
        Buffer.BlockCopy(c.Values.Data, 0, flat, (int)c.Offset * 4, c.Values.Data.Length);
        var p = Progress(c.Step);
        if (!p.TryGetValue(c.FromReplica, out var seen)) p[c.FromReplica] = seen = ([], c.ChunkCount);
        seen.Received.Add(c.ChunkIndex);
        TryReduce(c.Step);
    }

    private Dictionary<int, (HashSet<int> Received, int Expected)> Progress(long step) =>
        chunksSeen.TryGetValue(step, out var d) ? d : chunksSeen[step] = [];

    private void TryReduce(long step)
    {
        if (step != NextSeq || !gradients.TryGetValue(step, out var slot) || !chunksSeen.TryGetValue(step, out var seen)) return;
        for (var r = 0; r < Replicas; r++)
            if (!slot.ContainsKey(r) || !seen.TryGetValue(r, out var n) || n.Received.Count != n.Expected) return;
        gradients.Remove(step);
        chunksSeen.Remove(step);
        var s = student!;
        var replicas = Replicas;
        computing = true;
        EngineAccess.Compute(() =>
        {
            // fixed order: replica 0 + 1 + ... in float32, then / N; every replica computes the same bits
            var sum = (float[])slot[0].Clone();
            for (var r = 1; r < replicas; r++)
            {
                var g = slot[r];
                for (var i = 0; i < sum.Length; i++) sum[i] += g[i];
            }
            for (var i = 0; i < sum.Length; i++) sum[i] /= replicas;
            using var t = tensor(sum);
            s.ApplyGradient(t);
            return AfterStep(step, null);
        }).PipeTo(Self);
    }

    /// <summary>Runs after a step, off the mailbox: evaluation and checkpoint bytes when due.</summary>
    private Trained AfterStep(long seq, double? loss)
    {
        var s = student!;
        double? acc = null;
        var final = s.Step >= Total;
        if (replica == 0 && EvalDue(s.Step))
            acc = Evaluation.Accuracy(s.Model, data!.TestX, data.TestY, EngineAccess.DeviceFor(spec!), spec!.Data.EvalBatch);
        var checkpoint = s.Step % CheckpointEvery == 0 || final ? EngineAccess.Save(s.SaveState) : null;
        var weights = final && replica == 0 ? EngineAccess.SaveModel(s.Model) : null;
        var competitor = CompetitorDue(spec!, s) ? EngineAccess.SaveModel(s.Model) : null;
        return new Trained(seq, loss, acc, checkpoint, weights, s.Lr, competitor);
    }

    private void OnTrained(Trained t)
    {
        computing = false;
        if (t.Loss is { } l && !double.IsFinite(l)) { OnStepFailed(new InvalidOperationException($"student loss is {l} at step {student!.Step}")); return; }
        buffer.Remove(t.Seq);
        busy = false;
        // chunks a peer sent twice for a step already applied
        foreach (var old in gradients.Keys.Where(k => k <= student!.Step).ToList()) { gradients.Remove(old); chunksSeen.Remove(old); }
        if (pendingRollback is not null)
        {
            RollBackToPeer();
            return;
        }
        if (t.Accuracy is { } a)
        {
            best = Math.Max(best, a);
            Log.Info("{0}: step {1}/{2} test accuracy {3:F2}%", Id, student!.Step, Total, a);
        }
        if (replica == 0 && (t.Loss is not null || t.Accuracy is not null)) ReportMetrics(t);
        if (t.Accuracy is not null || student!.Step % 5 == 0)
            Services.Coordinator.Tell(new EntityProgress(RunId, Id, student!.Step, Total, buffer.Count, 0, t.Accuracy, Services.NodeName, null));
        if (t.Checkpoint is not null)
        {
            var blob = Services.Blobs.Put(t.Checkpoint);
            var old = State.Checkpoints;
            var step = student!.Step;
            Persist(new CheckpointWritten(step, t.Seq, blob, t.Accuracy, best), e =>
            {
                State = State.Apply(e);
                DeleteDroppedCheckpoints(old);
                // every batch up to here is in a checkpoint now: the generator may drop them (not
                // DeepInversion's rounds: every later step samples them)
                if (!PoolMode) Services.Generators.Tell(new ReleaseBatches(EntityId.Generator(RunId), Id, t.Seq));
                MaybeSnapshot(50);
                if (t.Weights is not null) Finish(t);
            });
        }
        if (t.Competitor is not null) OfferCompetitor(t.Competitor);
        RequestMore();
        TryTrain();
    }

    /// <summary>The step's loss and accuracy for the run's metrics.csv (replica 0 speaks for all: they hold the same model).</summary>
    private void ReportMetrics(Trained t)
    {
        var objective = student!.Objective;
        var values = new Dictionary<string, double> { [objective.LrName] = t.Lr, ["rss_mb"] = RunDirectory.ResidentMegabytes() };
        if (t.Loss is { } l) values[objective.LossName] = l;
        if (t.Accuracy is { } a) values["test_accuracy"] = a;
        Services.Coordinator.Tell(RunMetrics.Of(RunId, Id, student!.Step, values));
    }

    private void Finish(Trained t)
    {
        var weights = Services.Blobs.Put(t.Weights!);
        Persist(new EntityFinished(student!.Step), e =>
        {
            State = State.Apply(e);
            Services.Coordinator.Tell(new StudentFinished(RunId, Id, t.Accuracy ?? double.NaN, best, student.Step, weights, rollbacks));
        });
    }

    private void ReportFinishedAgain()
    {
        if (replica != 0 || State.Checkpoints.LastOrDefault() is not { } last) return;
        // the coordinator may have missed the first report; the last checkpoint holds the final model
        Services.Coordinator.Tell(new StudentFinished(RunId, Id, last.Accuracy ?? double.NaN, last.BestAccuracy, last.Step, "", rollbacks));
    }

    /// <summary>
    /// The divergence guard for the pipeline's student: a step that fails (a non-finite value
    /// libtorch refuses) or a non-finite loss rolls the student back to its newest good checkpoint
    /// with its learning rate multiplied by guard.lr_factor; the batches after the checkpoint are
    /// still in the generator's pool and are trained again. After guard.max_rollbacks the run fails.
    /// </summary>
    private void OnStepFailed(Exception cause)
    {
        var reason = cause is AggregateException { InnerException: { } inner } ? inner.Message : cause.Message;
        reason = reason.Split('\n')[0];
        computing = false;
        Log.Error(cause, "{0}: step {1} failed", Id, student?.Step);
        if (student is null || spec is null || !spec.Guard.Enabled || ++rollbacks > spec.Guard.MaxRollbacks)
        {
            Fail($"student failed at step {student?.Step}: {reason}" + (rollbacks > 0 ? $" (after {rollbacks - 1} rollbacks)" : ""));
            return;
        }
        var factor = spec.Guard.LrFactor;
        var libtorchError = (cause is AggregateException { InnerException: { } i2 } ? i2 : cause) is System.Runtime.InteropServices.ExternalException;
        lastRollbackScaled = !libtorchError;
        // a non-finite loss lowers the learning rate, as the engine's guard does (the checkpoint carries the
        // scale of earlier rollbacks); an error libtorch raised is retried at the same rate, so the run still
        // computes what the engine computes (see docs/engineering-notes.md on the rare Scalar error)
        RestoreCheckpoint(State.Checkpoints, freshBeforeFirst: false, t => { if (!libtorchError) t.ScaleLearningRates(factor); },
            (_, _) => reason, guard: true, $"{reason}; rollback");
    }

    private void OnRolledBack(RolledBack r)
    {
        busy = false;
        computing = false;
        if (r.Fresh is not null) student = r.Fresh;
        var message = r.Guard
            ? $"run {RunId}, entity {Id}: guard: {r.Reason}; rolled back to step {r.Step}{(lastRollbackScaled ? $" and multiplied the learning rate by {spec!.Guard.LrFactor}" : ", same learning rate")} (rollback {rollbacks})"
            : $"run {RunId}, entity {Id}: {r.Reason}; rolled back to step {r.Step} to stay in lockstep";
        Log.Warning(message);
        Services.Coordinator.Tell(new EntityProgress(RunId, Id, r.Step, Total, 0, 0, null, Services.NodeName, message));
        // batches and gradients after the checkpoint are trained and exchanged again (a peer at our
        // step resends its gradient when it hears where we are)
        buffer.Clear();
        gradients.Clear();
        chunksSeen.Clear();
        // (DeepInversion's rounds stay: they are the same rounds whatever the step)
        if (!PoolMode) requestedUpTo = student!.Step;
        lastBatchUtc = DateTime.UtcNow;
        AnnounceStep(_ => true);
        if (pendingRollback is not null && pendingRollback.Value.Step < student!.Step) { RollBackToPeer(); return; }
        pendingRollback = null;
        RequestMore();
    }

    private void Fail(string reason)
    {
        busy = false;
        ReportFailure(reason);
    }

    protected override void PostStop()
    {
        var (s, p) = (student, pool);
        EngineAccess.Release(() => { s?.Model.Dispose(); s?.Dispose(); p?.Dispose(); });
        base.PostStop();
    }
}
