namespace Cluster.Contracts;

/// <summary>
/// Every message and persisted event of ClusterDistill. The serializer is bound to this interface
/// in configuration; a type that does not implement it never reaches our serializer, and a
/// manifest we do not know is refused (see Serialization/ContractSerializer).
/// </summary>
public interface IWireMessage;

/// <summary>Messages to a sharded entity (generator, teacher or student): the id routes them.</summary>
public interface IEntityMessage : IWireMessage
{
    string EntityId { get; }
}

/// <summary>Messages to the run coordinator singleton.</summary>
public interface IRunCommand : IWireMessage;

/// <summary>Events and snapshot states written to the journal.</summary>
public interface IPersistedEvent : IWireMessage;

/// <summary>Messages to the sweep coordinator singleton.</summary>
public interface ISweepCommand : IWireMessage;

/// <summary>A persisted event about one trial of a sweep.</summary>
public interface ITrialEvent : IPersistedEvent
{
    string SweepId { get; }
    string TrialId { get; }
}
