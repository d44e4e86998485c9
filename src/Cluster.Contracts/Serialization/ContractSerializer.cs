using Akka.Actor;
using Akka.Serialization;

namespace Cluster.Contracts.Serialization;

/// <summary>
/// Akka serializer for every <see cref="IWireMessage"/>, bound in configuration
/// (akka.actor.serialization-bindings). The manifest names the contract from a fixed table.
/// </summary>
public sealed class ContractSerializer : SerializerWithStringManifest
{
    /// <summary>Ids 1-100 are Akka's own.</summary>
    public const int Id = 517;

    private readonly long maxBytes;

    public ContractSerializer(ExtendedActorSystem system) : base(system)
    {
        var configured = system.Settings.Config.GetByteSize("clusterdistill.wire.max-message-bytes", null);
        maxBytes = configured ?? ContractCodec.DefaultMaxMessageBytes;
    }

    public override int Identifier => Id;

    public override string Manifest(object o) => ContractCodec.Manifest(o);

    public override byte[] ToBinary(object obj) => ContractCodec.Serialize(obj, maxBytes);

    public override object FromBinary(byte[] bytes, string manifest) => ContractCodec.Deserialize(bytes, manifest, maxBytes);
}
