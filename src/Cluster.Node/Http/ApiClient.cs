using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Hosting;

namespace Cluster.Node.Http;

/// <summary>The seed could not be reached at all (nothing listens, no route, no name): the CLI says so in one line.</summary>
public sealed class ApiUnreachableException(string message, Exception inner) : Exception(message, inner);

/// <summary>
/// The CLI's side of the seed's API (submit, status, cancel, results, follow). It does not join
/// the cluster: a seed that is down is an error within the connect timeout.
/// </summary>
public sealed class ApiClient : IDisposable
{
    public const string EnvServer = "CLUSTERDISTILL_SERVER";
    public const string DefaultServer = "http://127.0.0.1:8080";
    public static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(1.5);

    private readonly HttpClient http;
    private readonly string tokenSource;

    public ApiClient(Uri server, ApiToken token, TimeSpan? requestTimeout = null)
    {
        Server = server;
        tokenSource = token.Source;
        http = new HttpClient(new SocketsHttpHandler { ConnectTimeout = ConnectTimeout, PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
        {
            BaseAddress = server,
            Timeout = requestTimeout ?? TimeSpan.FromSeconds(30),
        };
        http.DefaultRequestHeaders.Authorization = AuthenticationHeaderValue.Parse(token.Header);
    }

    public Uri Server { get; }

    /// <summary>--server, else CLUSTERDISTILL_SERVER, else http://127.0.0.1:8080; a clear error for anything not an http(s) URL.</summary>
    public static Uri ServerOf(string? option)
    {
        var text = option ?? (Environment.GetEnvironmentVariable(EnvServer) is { Length: > 0 } e ? e : DefaultServer);
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new Distill.Engine.Specs.InputException($"--server '{text}': expected the seed's API as http://HOST:PORT");
        return uri;
    }

    public async Task<Submitted> SubmitRunAsync(string yaml, string specFile, string? runId, CancellationToken ct = default) =>
        await Send<Submitted>(HttpMethod.Post, $"api/runs?specFile={Uri.EscapeDataString(specFile)}" + Query("runId", runId), Yaml(yaml), ct);

    public async Task<Submitted> SubmitSweepAsync(string yaml, string specFile, string? sweepId, CancellationToken ct = default) =>
        await Send<Submitted>(HttpMethod.Post, $"api/sweeps?specFile={Uri.EscapeDataString(specFile)}" + Query("sweepId", sweepId), Yaml(yaml), ct);

    public Task<RunSummary[]> RunsAsync(CancellationToken ct = default) => Send<RunSummary[]>(HttpMethod.Get, "api/runs", null, ct);

    public Task<RunSummary> RunAsync(string runId, CancellationToken ct = default) => Send<RunSummary>(HttpMethod.Get, $"api/runs/{Uri.EscapeDataString(runId)}", null, ct);

    public Task<SweepSummary[]> SweepsAsync(CancellationToken ct = default) => Send<SweepSummary[]>(HttpMethod.Get, "api/sweeps", null, ct);

    public Task<SweepSummary> SweepAsync(string sweepId, CancellationToken ct = default) => Send<SweepSummary>(HttpMethod.Get, $"api/sweeps/{Uri.EscapeDataString(sweepId)}", null, ct);

    public Task<CancelAnswer> CancelRunAsync(string runId, string reason, CancellationToken ct = default) =>
        Send<CancelAnswer>(HttpMethod.Post, $"api/runs/{Uri.EscapeDataString(runId)}/cancel?reason={Uri.EscapeDataString(reason)}", null, ct);

    public Task<SweepSummary> CancelSweepAsync(string sweepId, string reason, CancellationToken ct = default) =>
        Send<SweepSummary>(HttpMethod.Post, $"api/sweeps/{Uri.EscapeDataString(sweepId)}/cancel?reason={Uri.EscapeDataString(reason)}", null, ct);

    public Task<ResultsView> ResultsAsync(string? sweepId, IReadOnlyList<string> runIds, string? metric = null, CancellationToken ct = default) =>
        Send<ResultsView>(HttpMethod.Get, (sweepId is not null ? $"api/results?sweep={Uri.EscapeDataString(sweepId)}"
            : $"api/results?runs={Uri.EscapeDataString(string.Join(',', runIds))}") + Query("metric", metric), null, ct);

    /// <summary>Polls until the run ends, printing its status line with the rate and time left whenever it changes (<see cref="RunLines"/>); a seed that fails over is asked again.</summary>
    public Task<RunSummary> FollowRunAsync(string runId, TextWriter log, TimeSpan poll, CancellationToken ct = default)
    {
        var lines = new RunLines();
        return FollowAsync(c => RunAsync(runId, c), s => lines.Next(s) is { } line ? line + Environment.NewLine : "", s => s.State.Ended(), log, poll, ct);
    }

    /// <summary>Polls until the sweep ends, writing it as a log (<see cref="SweepProgressLog"/>).</summary>
    public Task<SweepSummary> FollowSweepAsync(string sweepId, TextWriter log, TimeSpan poll, CancellationToken ct = default)
    {
        var progress = new SweepProgressLog();
        return FollowAsync(c => SweepAsync(sweepId, c), s => progress.Next(s, DateTime.UtcNow), s => s.State != SweepState.Running, log, poll, ct);
    }

    /// <summary>Asks until `ended`, writing what `show` makes of each answer; a seed that is failing over or away for a moment is asked again.</summary>
    private static async Task<T> FollowAsync<T>(Func<CancellationToken, Task<T>> ask, Func<T, string> show, Func<T, bool> ended,
        TextWriter log, TimeSpan poll, CancellationToken ct) where T : class
    {
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            T? s = null;
            try { s = await ask(ct); }
            catch (ApiProblemException e) when (e.Status == HttpStatusCode.ServiceUnavailable) { log.WriteLine($"[status] {e.Message}; asking again"); }
            catch (ApiUnreachableException e) { log.WriteLine($"[status] {e.Message}; asking again"); }
            if (s is not null)
            {
                log.Write(show(s));
                if (ended(s)) return s;
            }
            await Task.Delay(poll, ct);
        }
    }

    private static string Query(string name, string? value) => value is null ? "" : $"&{name}={Uri.EscapeDataString(value)}";

    private static StringContent Yaml(string yaml) => new(yaml, Encoding.UTF8, "application/yaml");

    private async Task<T> Send<T>(HttpMethod method, string path, HttpContent? body, CancellationToken ct)
    {
        try { return await Exchange<T>(method, path, body, ct); }
        catch (TaskCanceledException e) when (!ct.IsCancellationRequested)
        {
            throw new ApiUnreachableException($"the seed's API at {Server} did not answer in {http.Timeout.TotalSeconds:F0} s", e);
        }
        catch (Exception e) when (e is not OperationCanceledException && Lost(e))
        {
            // refused, reset or cut off mid-answer (a seed stopping): the seed is not there to ask, whatever the layer that saw it
            var cause = e;
            while (cause.InnerException is { } inner && cause is not SocketException) cause = inner;
            throw new ApiUnreachableException($"cannot reach the seed's API at {Server}: {cause.Message}", e);
        }
    }

    /// <summary>A failure of the connection rather than an answer: the socket's, the stream's, or HttpClient's saying so.</summary>
    internal static bool Lost(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
            if (x is SocketException or IOException
                || x is HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError or HttpRequestError.ResponseEnded })
                return true;
        return false;
    }

    private async Task<T> Exchange<T>(HttpMethod method, string path, HttpContent? body, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(method, path) { Content = body };
        using var response = await http.SendAsync(request, ct);
        {
            if (response.IsSuccessStatusCode)
                return await response.Content.ReadFromJsonAsync<T>(ApiJson.Options, ct)
                       ?? throw new InvalidOperationException($"{method} {path}: an empty answer");
            var text = await response.Content.ReadAsStringAsync(ct);
            string? detail = null;
            try { detail = JsonDocument.Parse(text).RootElement.GetProperty("detail").GetString(); }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException) { }
            if (response.StatusCode == HttpStatusCode.Unauthorized)
                throw new ApiProblemException(response.StatusCode, $"the seed at {Server} refused the API token from {tokenSource} (401)");
            throw new ApiProblemException(response.StatusCode, detail ?? $"{method} {path}: {(int)response.StatusCode} {response.ReasonPhrase}");
        }
    }

    public void Dispose() => http.Dispose();
}

/// <summary>The API answered with an error (problem+json): its status and reason.</summary>
public sealed class ApiProblemException(HttpStatusCode status, string message) : InvalidOperationException(message)
{
    public HttpStatusCode Status { get; } = status;
}
