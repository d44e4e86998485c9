using System.Collections.Immutable;
using Akka.Actor;
using Akka.Cluster;
using Akka.Management.Cluster.Bootstrap;
using Akka.Management.Cluster.Bootstrap.ContactPoint;
using Akka.Management.Dsl;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Newtonsoft.Json;

namespace Cluster.Node.Http;

/// <summary>
/// The contact point of Cluster.Bootstrap: GET /bootstrap/seed-nodes on the management port, which
/// the other nodes' bootstrap probes. Akka.Management's own HTTP server cannot start with the
/// packages this project restores (Akka.Http.Shim 1.5.73 calls a Ceen.Httpd 0.9.9 method that the
/// 0.9.10 served here lacks: MissingMethodException), so the route is served by Kestrel, with
/// Akka.Management's own JSON types and serializer, and bootstrap is told its self contact point.
/// Nothing here needs the API token: it says which members are up, as Akka.Management's does;
/// the NetworkPolicy keeps the port to cluster pods.
/// </summary>
public sealed class BootstrapEndpoint : IAsyncDisposable
{
    private readonly WebApplication app;

    private BootstrapEndpoint(WebApplication app, Uri address)
    {
        this.app = app;
        Address = address;
    }

    public Uri Address { get; }

    public static async Task<BootstrapEndpoint> StartAsync(ActorSystem system, string host, int port)
    {
        var web = NodeHttpServer.Builder(host, port, maxBodyBytes: 0).Build();
        web.MapGet("/bootstrap/seed-nodes", () => Results.Content(SeedNodesJson(system), "application/json"));
        await NodeHttpServer.StartOrSayWhy(web, $"cannot listen for Cluster.Bootstrap at {host}:{port} (--management-port)");
        var address = new Uri(web.Urls.First());
        // the address the other contact points know this one by: the lowest of them forms the cluster
        ClusterBootstrap.Get(system).Routes(ManagementRouteProviderSettings.Create(new Uri($"http://{host}:{address.Port}/"), readOnly: true));
        return new BootstrapEndpoint(web, address);
    }

    /// <summary>
    /// This member, and the reachable members that are up or joining; none while this member is
    /// leaving or down, so that a node going away is not offered as a way in.
    /// </summary>
    public static string SeedNodesJson(ActorSystem system)
    {
        var cluster = Akka.Cluster.Cluster.Get(system);
        var self = cluster.SelfMember;
        var members = ImmutableList<HttpBootstrapJsonProtocol.ClusterMember>.Empty;
        if (self.Status is not (MemberStatus.Down or MemberStatus.Exiting or MemberStatus.Leaving or MemberStatus.Removed))
        {
            var state = cluster.State;
            members = state.Members
                .Where(m => !state.Unreachable.Contains(m) && m.Status is MemberStatus.Up or MemberStatus.WeaklyUp or MemberStatus.Joining)
                .Select(m => new HttpBootstrapJsonProtocol.ClusterMember(m.UniqueAddress.Address, m.UniqueAddress.Uid, m.Status, m.Roles))
                .ToImmutableList();
        }
        return JsonConvert.SerializeObject(new HttpBootstrapJsonProtocol.SeedNodes(self.UniqueAddress.Address, members));
    }

    public async ValueTask DisposeAsync()
    {
        using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(3));
        await app.StopAsync(grace.Token);
        await app.DisposeAsync();
    }
}
