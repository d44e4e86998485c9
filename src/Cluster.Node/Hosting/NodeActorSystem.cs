using Akka.Actor;
using Akka.Actor.Setup;
using Akka.Configuration;
using Akka.Remote.Transport.DotNetty;
using Cluster.Node.Security;

namespace Cluster.Node.Hosting;

/// <summary>
/// Creates a node's actor system: with TLS, Akka.Remote gets the node's certificate and the check
/// of peers' (mutual authentication; a peer's certificate must chain to the cluster's authority,
/// whatever its address) through DotNettySslSetup, beside the configuration's enable-ssl.
/// </summary>
public static class NodeActorSystem
{
    public static ActorSystem Create(string name, Config config, NodeTls? tls) => tls is null
        ? ActorSystem.Create(name, config)
        : ActorSystem.Create(name, ActorSystemSetup.Create(BootstrapSetup.Create().WithConfig(config),
            new DotNettySslSetup(tls.Certificate, suppressValidation: false, requireMutualAuthentication: true, validateCertificateHostname: false,
                customValidator: (certificate, _, _, errors, _) => tls.Accept(certificate, errors))));
}
