using Cluster.Contracts;
using Cluster.Contracts.Runs;

namespace Cluster.Node.Actors;

/// <summary>The entities' progress reports: the live figures a status gives, and their news, which events.log keeps.</summary>
public sealed partial class RunCoordinator
{
    private sealed class Live
    {
        public long StudentStep, TotalSteps, Generated;
        public int Pool, GeneratorQueue, InFlight;
        public double? Accuracy;
        public string? Message, Node, GeneratorNode;
        /// <summary>Each student replica's node by replica index: <see cref="Node"/> names them all, in that order.</summary>
        public readonly SortedDictionary<int, string> ReplicaNodes = [];
        /// <summary>The kind of entity whose message <see cref="Message"/> is, and the student's step when it came.</summary>
        public string? MessageFrom;
        public long MessageAt;
        /// <summary>The source's guard rollbacks as it last reported them.</summary>
        public int? SourceRollbacks;
    }

    /// <summary>The last message logged per entity, so that a report repeated is not logged twice.</summary>
    private readonly Dictionary<string, string> lastMessage = [];

    private void OnProgress(EntityProgress p)
    {
        if (!state.Runs.ContainsKey(p.RunId)) return;
        var l = live.TryGetValue(p.RunId, out var x) ? x : live[p.RunId] = new Live();
        var id = EntityId.Parse(p.EntityId);
        var kind = id.Kind;
        if (p.Step == EntityProgress.NewsOnly) { }   // a message alone (a journal outage): the figures stay as they are
        else if (kind == EntityKinds.Student)
        {
            l.ReplicaNodes[id.Index] = p.Node;
            l.Node = string.Join(", ", l.ReplicaNodes.Values.Distinct());
            // replicas step in lockstep and replica 0 evaluates: its figures are the run's, whichever reported last
            if (id.Index == 0)
            {
                l.StudentStep = p.Step;
                l.TotalSteps = p.TotalSteps;
                l.InFlight = p.Queue;
                if (p.Accuracy is { } a) l.Accuracy = a;
            }
            // news stays until it is old: the teacher's (loaded, resumed at its step N) once the student trains,
            // any other's (a resume, a rollback; events.log keeps them all) at the first evaluation after it
            if (l.MessageFrom == EntityKinds.Teacher || p.Accuracy is not null && p.Message is null && p.Step > l.MessageAt) (l.Message, l.MessageFrom) = (null, null);
        }
        else if (kind == EntityKinds.Generator)
        {
            l.Generated = p.Step;
            l.GeneratorQueue = p.Queue;
            l.Pool = p.PoolBatches;
            l.GeneratorNode = p.Node;
            if (p.SourceRollbacks is { } n) l.SourceRollbacks = n;
        }
        if (p.Message is not null)
        {
            (l.Message, l.MessageFrom, l.MessageAt) = (p.Message, kind, l.StudentStep);
            if (lastMessage.GetValueOrDefault(p.EntityId) != p.Message)
            {
                lastMessage[p.EntityId] = p.Message;
                FileWrite(p.RunId, "events.log", () => Dir(p.RunId).Event($"{p.EntityId} on {p.Node}: {p.Message}"));
            }
        }
        WriteStatus(state.Runs[p.RunId], throttle: true);
    }
}
