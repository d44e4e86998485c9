using System.Net;
using System.Text.Json;
using Cluster.Node.Telemetry;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Prometheus;

namespace Cluster.Node.Http;

/// <summary>
/// Every node's HTTP endpoint (Kestrel): /health/live, /health/ready and /metrics (Prometheus), and
/// on the seed the control API and the dashboard (<see cref="ControlApi"/>). It starts before the
/// node joins, so that liveness answers and readiness says why it is not ready yet.
/// </summary>
public sealed class NodeHttpServer : IAsyncDisposable
{
    private readonly WebApplication app;

    private NodeHttpServer(WebApplication app, Uri address)
    {
        this.app = app;
        Address = address;
    }

    /// <summary>Where it listens (the port chosen when asked for port 0).</summary>
    public Uri Address { get; }

    /// <param name="readiness">null when ready, else why not (asked on every /health/ready)</param>
    /// <param name="map">more endpoints (the seed's API and dashboard)</param>
    public static async Task<NodeHttpServer> StartAsync(string host, int port, Func<string?> readiness, Action<WebApplication>? map = null)
    {
        NodeMetrics.Register();
        if (TorchSharp.torch.cuda.is_available()) NodeMetrics.TrackGpuMemory();
        var builder = Builder(host, port, ControlApi.MaxBodyBytes);
        builder.Services.AddHealthChecks()
            .AddCheck("cluster", () => readiness() is { } why ? HealthCheckResult.Unhealthy(why) : HealthCheckResult.Healthy("joined; every hosted shard region registered"), tags: ["ready"]);
        builder.Services.AddProblemDetails();
        var web = builder.Build();
        web.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false, ResponseWriter = WriteHealth });
        web.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = c => c.Tags.Contains("ready"), ResponseWriter = WriteHealth });
        web.MapMetrics("/metrics");
        map?.Invoke(web);
        await StartOrSayWhy(web, $"cannot listen for HTTP at {host}:{port}");
        var bound = web.Urls.First();
        return new NodeHttpServer(web, new Uri(bound.Replace("0.0.0.0", "127.0.0.1").Replace("[::]", "localhost")));
    }

    /// <summary>A Kestrel application on host:port that logs nothing of its own (the node logs through Akka) and sends no server header.</summary>
    internal static WebApplicationBuilder Builder(string host, int port, long maxBodyBytes)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k =>
        {
            k.Listen(IPAddress.Parse(host == "localhost" ? "127.0.0.1" : host), port);
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = maxBodyBytes;
        });
        return builder;
    }

    /// <summary>Starts it; a port that cannot be bound is an InvalidOperationException that says what could not listen where.</summary>
    internal static async Task StartOrSayWhy(WebApplication web, string what)
    {
        try { await web.StartAsync(); }
        catch (IOException e)
        {
            await web.DisposeAsync();
            throw new InvalidOperationException($"{what}: {e.Message}", e);
        }
    }

    /// <summary>{"status": "Healthy", "checks": {"cluster": "why"}} with 200, or 503 when unhealthy.</summary>
    private static Task WriteHealth(HttpContext context, HealthReport report)
    {
        context.Response.ContentType = "application/json";
        return context.Response.WriteAsync(JsonSerializer.Serialize(new
        {
            status = report.Status.ToString().ToLowerInvariant(),
            checks = report.Entries.ToDictionary(e => e.Key, e => new { status = e.Value.Status.ToString().ToLowerInvariant(), reason = e.Value.Description }),
        }));
    }

    public async ValueTask DisposeAsync()
    {
        using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        await app.StopAsync(grace.Token);
        await app.DisposeAsync();
    }
}
