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
    /// <exception cref="InvalidOperationException">The remoting port cannot be bound (in use, or an address not on this host), said in one line.</exception>
    public static ActorSystem Create(string name, Config config, NodeTls? tls)
    {
        try
        {
            return tls is null
                ? ActorSystem.Create(name, config)
                : ActorSystem.Create(name, ActorSystemSetup.Create(BootstrapSetup.Create().WithConfig(config),
                    new DotNettySslSetup(tls.Certificate, suppressValidation: false, requireMutualAuthentication: true, validateCertificateHostname: false,
                        customValidator: (certificate, _, _, errors, _) => tls.Accept(certificate, errors))));
        }
        catch (Exception e) when (BindFailure(e) is { } why)
        {
            throw new InvalidOperationException($"cannot listen for cluster traffic: {why}", e);
        }
    }

    /// <summary>
    /// "Failed to bind to [host:port] (the socket's reason)" from the nested exceptions Akka wraps a
    /// bind failure in; null for any other failure.
    /// </summary>
    public static string? BindFailure(Exception e)
    {
        var all = new List<Exception>();
        void Walk(Exception x)
        {
            all.Add(x);
            if (x is AggregateException a) foreach (var i in a.InnerExceptions) Walk(i);
            else if (x.InnerException is { } inner) Walk(inner);
        }
        Walk(e);
        if (all.FirstOrDefault(x => x.Message.StartsWith("Failed to bind", StringComparison.Ordinal)) is not { } bind) return null;
        var what = bind.Message.Split(". ")[0].TrimEnd('.');
        return all.OfType<System.Net.Sockets.SocketException>().FirstOrDefault() is { } socket ? $"{what} ({socket.Message})" : what;
    }
}
