using System.Runtime.Serialization;
using Akka.Actor;
using Akka.Configuration;
using Akka.Serialization;

namespace Cluster.Contracts.Serialization;

/// <summary>
/// Takes the place of Akka's default "json" serializer (Newtonsoft with type names, which would let
/// a peer name the type to build): nothing is serialised or read through it. With
/// allow-unregistered-types off, a type with no binding fails before it gets here; this is the last
/// word for a binding that still names "json", and it keeps Newtonsoft's id off the wire.
/// </summary>
public sealed class NoContractSerializer : Serializer
{
    public const int Id = 518;

    public NoContractSerializer(ExtendedActorSystem system) : base(system) { }

    /// <summary>Akka passes the settings section of the serializer it replaces (serialization-settings.json).</summary>
    public NoContractSerializer(ExtendedActorSystem system, Config _) : base(system) { }

    public override int Identifier => Id;

    public override bool IncludeManifest => false;

    public override byte[] ToBinary(object obj) =>
        throw new SerializationException($"{obj?.GetType().FullName ?? "null"} has no wire contract: only Cluster.Contracts' IWireMessage types and Akka's own messages cross the wire");

    public override object FromBinary(byte[] bytes, Type? type) =>
        throw new SerializationException($"refused a message for the typeless serializer ({type?.FullName ?? "no type"}): only Cluster.Contracts' IWireMessage types and Akka's own messages cross the wire");
}
