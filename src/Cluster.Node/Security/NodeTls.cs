using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Cluster.Node.Security;

/// <summary>
/// A node's TLS material: its certificate and key, and the certificate authority every node's
/// certificate must chain to. Akka.Remote (DotNetty, mutual authentication) and the data plane
/// both use it: a peer is accepted when its certificate chains to this authority, whatever its
/// address (nodes are pods whose addresses change; a certificate names the cluster, not a host).
/// Files as a Kubernetes TLS Secret mounts them: tls.crt, tls.key and ca.crt in one folder.
/// </summary>
public sealed class NodeTls
{
    private NodeTls(X509Certificate2 certificate, X509Certificate2 authority, string folder)
    {
        Certificate = certificate;
        Authority = authority;
        Folder = folder;
    }

    /// <summary>$CLUSTERDISTILL_TLS_DIR, as --tls takes it.</summary>
    public const string FolderVariable = "CLUSTERDISTILL_TLS_DIR";

    public X509Certificate2 Certificate { get; }
    public X509Certificate2 Authority { get; }
    public string Folder { get; }

    /// <summary>Reads tls.crt, tls.key and ca.crt from a folder; every problem is named with its file.</summary>
    public static NodeTls Load(string folder)
    {
        string F(string name)
        {
            var path = Path.Combine(folder, name);
            return File.Exists(path) ? path : throw new FileNotFoundException($"TLS: {path} is missing (--tls names a folder with tls.crt, tls.key and ca.crt)", path);
        }
        var (crt, key, ca) = (F("tls.crt"), F("tls.key"), F("ca.crt"));
        X509Certificate2 certificate, authority;
        try { certificate = X509Certificate2.CreateFromPemFile(crt, key); }
        catch (CryptographicException e) { throw new InvalidDataException($"TLS: {crt} with {key} is not a PEM certificate and its private key: {e.Message}", e); }
        try { authority = X509CertificateLoader.LoadCertificateFromFile(ca); }
        catch (CryptographicException e) { throw new InvalidDataException($"TLS: {ca} is not a PEM certificate: {e.Message}", e); }
        if (!certificate.HasPrivateKey) throw new InvalidDataException($"TLS: {key} holds no private key for {crt}");
        var now = DateTime.Now;
        if (now < certificate.NotBefore || now > certificate.NotAfter)
            throw new InvalidDataException($"TLS: {crt} is valid from {certificate.NotBefore:u} to {certificate.NotAfter:u}, not now");
        var tls = new NodeTls(certificate, authority, folder);
        if (tls.ChainProblem(certificate) is { } problem) throw new InvalidDataException($"TLS: {crt} does not chain to {ca}: {problem}");
        return tls;
    }

    /// <summary>Why a peer's certificate is not one of this cluster's (null: it is).</summary>
    public string? ChainProblem(X509Certificate? presented)
    {
        if (presented is null) return "no certificate was presented";
        // the presented certificate belongs to the caller (the TLS stream, or this node): not disposed here
        var owned = presented as X509Certificate2 is null ? X509CertificateLoader.LoadCertificate(presented.GetRawCertData()) : null;
        var peer = owned ?? (X509Certificate2)presented;
        using var _ = owned;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(Authority);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (chain.Build(peer)) return null;
        return string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()).Where(s => s.Length > 0).DefaultIfEmpty("untrusted"));
    }

    /// <summary>The check both ends of a connection make: the chain to our authority, and nothing about host names.</summary>
    public bool Accept(X509Certificate? certificate, SslPolicyErrors errors) => ChainProblem(certificate) is null;

    public SslServerAuthenticationOptions ServerOptions() => new()
    {
        ServerCertificateContext = SslStreamCertificateContext.Create(Certificate, additionalCertificates: null),
        ClientCertificateRequired = true,
        EnabledSslProtocols = SslProtocols.Tls13 | SslProtocols.Tls12,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        RemoteCertificateValidationCallback = (_, c, _, e) => Accept(c, e),
    };

    public SslClientAuthenticationOptions ClientOptions(string host) => new()
    {
        TargetHost = host,
        ClientCertificates = [Certificate],
        EnabledSslProtocols = SslProtocols.Tls13 | SslProtocols.Tls12,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        RemoteCertificateValidationCallback = (_, c, _, e) => Accept(c, e),
    };
}
