using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Akka.Actor;
using Akka.Cluster;
using Cluster.Contracts;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Sweeps;
using Cluster.Node.Actors;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Cluster.Node.Telemetry;
using Distill.Engine.Runs;
using Distill.Engine.Specs;
using Distill.Engine.Sweeps;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Cluster.Node.Http;

/// <summary>
/// The seed's control API under /api: everything the CLI does (submit, status, cancel, results),
/// a run's metrics, events and sample grids, the cluster's nodes, and live status as server-sent
/// events. Every request needs the bearer token (<see cref="ApiToken"/>); without it the answer is
/// 401 and nothing is done. Errors are problem+json with the reason.
/// </summary>
public static partial class ControlApi
{
    public const long MaxBodyBytes = 1 << 20;
    private static readonly TimeSpan AskTimeout = TimeSpan.FromSeconds(20);

    public static void Map(WebApplication app, ApiToken token, Func<ClusterNode?> node, NodeOptions options)
    {
        app.Use(async (context, next) =>
        {
            if (context.Request.Path.StartsWithSegments("/api") && !token.Accepts(context.Request.Headers.Authorization))
            {
                context.Response.Headers.WWWAuthenticate = "Bearer";
                await Problem(StatusCodes.Status401Unauthorized, "unauthorized",
                    "this API needs the header 'Authorization: Bearer <token>' with the seed's token").ExecuteAsync(context);
                return;
            }
            await next(context);
        });
        var api = app.MapGroup("/api");
        Runs(api, node, options);
        Sweeps(api, node, options);
        api.MapGet("/nodes", async (CancellationToken ct) => await With(node, async n => Results.Json(Nodes(n, await RunsOrNone(n, ct)), ApiJson.Options)));
        api.MapGet("/stream", (HttpContext context) => Stream(context, node));
        api.MapGet("/results", (string? sweep, string? runs, string? metric) => ResultsOf(options, sweep, runs, metric));
        MapDashboard(app);
    }

    /// <summary>
    /// The dashboard's static files, from this assembly (no CDN, nothing on disk). They hold no
    /// data, so they need no token; the page asks for it and sends it with every API call.
    /// </summary>
    private static void MapDashboard(WebApplication app)
    {
        var assembly = typeof(ControlApi).Assembly;
        var files = new Dictionary<string, (byte[] Bytes, string Type)>(StringComparer.Ordinal);
        foreach (var (name, type) in new[] { ("index.html", "text/html; charset=utf-8"), ("app.js", "text/javascript; charset=utf-8"),
                                             ("charts.js", "text/javascript; charset=utf-8"), ("app.css", "text/css; charset=utf-8") })
        {
            using var stream = assembly.GetManifestResourceStream("dashboard/" + name)
                               ?? throw new InvalidOperationException($"the dashboard's {name} is not in {assembly.GetName().Name}");
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            files[name] = (copy.ToArray(), type);
        }
        IResult Serve(HttpContext context, string name)
        {
            if (!files.TryGetValue(name, out var f)) return NotFound($"no dashboard file {name}");
            context.Response.Headers.CacheControl = "no-cache";
            context.Response.Headers.XContentTypeOptions = "nosniff";
            context.Response.Headers.ContentSecurityPolicy =
                "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";
            return Results.Bytes(f.Bytes, f.Type);
        }
        app.MapGet("/", (HttpContext c) => Serve(c, "index.html"));
        app.MapGet("/dashboard/{file}", (HttpContext c, string file) => Serve(c, file));
    }

    private static void Runs(RouteGroupBuilder api, Func<ClusterNode?> node, NodeOptions options)
    {
        api.MapGet("/runs", async (CancellationToken ct) => await With(node, async n =>
            Results.Json(await RunClient.StatusAsync(n.Coordinator, null, AskTimeout, ct), ApiJson.Options)));
        api.MapGet("/runs/{id}", async (string id, CancellationToken ct) => await With(node, async n =>
            RunIdProblem(id) ?? ((await RunClient.StatusAsync(n.Coordinator, id, AskTimeout, ct)).FirstOrDefault() is { } s
                ? Results.Json(s, ApiJson.Options) : NotFound($"no run {id}"))));
        api.MapPost("/runs", async (HttpRequest request, string? runId, string? specFile) => await With(node, async n =>
        {
            var yaml = await Body(request);
            if (RunIdProblem(runId) is { } bad) return bad;
            var file = specFile ?? "<api>";
            try { SpecParser.Parse(yaml, file); }
            catch (SpecException e) { return Problem(StatusCodes.Status400BadRequest, "spec refused", e.Message); }
            return await n.Coordinator.Ask<IRunCommand>(new SubmitRun(yaml, file, runId), AskTimeout) switch
            {
                RunAccepted a => Accepted($"/api/runs/{a.RunId}", new Submitted(a.RunId, a.AlreadyKnown)),
                RunRejected r => Refused(r.Reason, StatusCodes.Status409Conflict, "run refused"),
                var other => Problem(StatusCodes.Status502BadGateway, "unexpected answer", other.GetType().Name),
            };
        }));
        api.MapPost("/runs/{id}/cancel", async (string id, string? reason) => await With(node, async n =>
            RunIdProblem(id) ?? await n.Coordinator.Ask<IRunCommand>(new CancelRun(id, reason ?? "cancelled through the API"), AskTimeout) switch
            {
                CancelAnswer a => Results.Json(a, ApiJson.Options),
                RunRejected r => Refused(r.Reason, StatusCodes.Status404NotFound, "not found"),
                var other => Problem(StatusCodes.Status502BadGateway, "unexpected answer", other.GetType().Name),
            }));
        api.MapGet("/runs/{id}/result", (string id) => RunFile(options, id, "result.json") is { } f
            ? Results.File(f, "application/json") : NotFound(NoResult(options, id)));
        // `after` is read here, not bound: a value that is not a count gets problem+json naming it, not an empty 400
        api.MapGet("/runs/{id}/metrics", (string id, string? after) => RunIdProblem(id) ?? NoRun(options, id) ?? AfterProblem(after, out var from) ?? Results.Json(Metrics(options, id, from), ApiJson.Options));
        api.MapGet("/runs/{id}/metrics.csv", (string id) => RunIdProblem(id) ?? NoRun(options, id) ?? (RunFile(options, id, "metrics.csv") is { } f
            ? Results.File(f, "text/csv") : NotFound($"run {id} has no metrics yet")));
        api.MapGet("/runs/{id}/events", (string id, string? after) => RunIdProblem(id) ?? NoRun(options, id) ?? AfterProblem(after, out var from) ?? Results.Json(Events(options, id, from), ApiJson.Options));
        api.MapGet("/runs/{id}/samples", (string id) => RunIdProblem(id) ?? NoRun(options, id) ?? Results.Json(Samples(options, id), ApiJson.Options));
        api.MapGet("/runs/{id}/samples/{file}", (string id, string file) =>
            RunIdProblem(id) ?? NoRun(options, id) ?? (SampleName().IsMatch(file) && RunFile(options, id, Path.Combine("samples", file)) is { } f
                ? Results.File(f, "image/png") : NotFound($"run {id} has no sample grid {file}")));
    }

    /// <summary>A coordinator's refusal: the request's fault (`status`), or 503 where its journal is down for now (asking again later succeeds).</summary>
    private static IResult Refused(string reason, int status, string title) =>
        reason.StartsWith(RunCoordinator.JournalUnavailable, StringComparison.Ordinal) || reason.StartsWith(SweepCoordinator.JournalUnavailable, StringComparison.Ordinal)
            ? Problem(StatusCodes.Status503ServiceUnavailable, "journal unavailable", reason)
            : Problem(status, title, reason);

    private static void Sweeps(RouteGroupBuilder api, Func<ClusterNode?> node, NodeOptions options)
    {
        api.MapGet("/sweeps", async (CancellationToken ct) => await With(node, async n =>
            Results.Json(await SweepClient.StatusAsync(n.Sweeps, null, AskTimeout, ct), ApiJson.Options)));
        api.MapGet("/sweeps/{id}", async (string id, CancellationToken ct) => await With(node, async n =>
            SweepIdProblem(id) ?? ((await SweepClient.StatusAsync(n.Sweeps, id, AskTimeout, ct)).FirstOrDefault() is { } s
                ? Results.Json(s, ApiJson.Options) : NotFound($"no sweep {id}"))));
        api.MapPost("/sweeps", async (HttpRequest request, string? sweepId, string? specFile) => await With(node, async n =>
        {
            var yaml = await Body(request);
            if (SweepIdProblem(sweepId) is { } bad) return bad;
            var file = specFile ?? "<api>";
            try { SweepParser.Parse(yaml, file); }
            catch (SpecException e) { return Problem(StatusCodes.Status400BadRequest, "sweep refused", e.Message); }
            return await n.Sweeps.Ask<ISweepCommand>(new SubmitSweep(yaml, file, sweepId), AskTimeout) switch
            {
                SweepAccepted a => Accepted($"/api/sweeps/{a.SweepId}", new Submitted(a.SweepId, a.AlreadyKnown)),
                SweepRejected r => Refused(r.Reason, StatusCodes.Status409Conflict, "sweep refused"),
                var other => Problem(StatusCodes.Status502BadGateway, "unexpected answer", other.GetType().Name),
            };
        }));
        api.MapPost("/sweeps/{id}/cancel", async (string id, string? reason) => await With(node, async n =>
            SweepIdProblem(id) ?? await n.Sweeps.Ask<ISweepCommand>(new CancelSweep(id, reason ?? "cancelled through the API"), AskTimeout) switch
            {
                SweepStatusReport { Sweeps: [var s] } => Results.Json(s, ApiJson.Options),
                SweepRejected r => Refused(r.Reason, StatusCodes.Status404NotFound, "not found"),
                var other => Problem(StatusCodes.Status502BadGateway, "unexpected answer", other.GetType().Name),
            }));
    }

    /// <summary>The node's coordinators, or 503 while the seed is starting or its coordinator cannot answer.</summary>
    private static async Task<IResult> With(Func<ClusterNode?> node, Func<ClusterNode, Task<IResult>> f)
    {
        if (node() is not { } n) return Problem(StatusCodes.Status503ServiceUnavailable, "starting", "the seed has not joined its cluster yet");
        try { return await f(n); }
        catch (AskTimeoutException) { return Problem(StatusCodes.Status503ServiceUnavailable, "coordinator busy", $"the coordinator did not answer in {AskTimeout.TotalSeconds:F0} s (failing over?)"); }
        catch (CoordinatorUnavailableException e) { return Problem(StatusCodes.Status503ServiceUnavailable, "coordinator unavailable", e.Message); }
        catch (BadHttpRequestException e) { return Problem(e.StatusCode, "bad request", e.Message); }
    }

    private static async Task<string> Body(HttpRequest request)
    {
        using var reader = new StreamReader(request.Body, new UTF8Encoding(false, throwOnInvalidBytes: true));
        try { return await reader.ReadToEndAsync(); }
        catch (DecoderFallbackException) { throw new BadHttpRequestException("the body is not UTF-8 text", StatusCodes.Status400BadRequest); }
    }

    public static IResult Problem(int status, string title, string detail) =>
        Results.Problem(detail: detail, statusCode: status, title: title);

    private static IResult NotFound(string detail) => Problem(StatusCodes.Status404NotFound, "not found", detail);

    /// <summary>?after=N: rows or events already read (none: 0); a problem when it is not a count.</summary>
    private static IResult? AfterProblem(string? after, out int from)
    {
        from = 0;
        if (after is null || int.TryParse(after, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out from)) return null;
        return Problem(StatusCodes.Status400BadRequest, "bad request", $"after={after}: the number of items already read (a non-negative integer)");
    }

    private static IResult? RunIdProblem(string? id) =>
        id is not null && EntityId.RunIdProblem(id) is { } p ? Problem(StatusCodes.Status400BadRequest, "bad id", p) : null;

    private static IResult? SweepIdProblem(string? id) =>
        id is not null && EntityId.SweepIdProblem(id) is { } p ? Problem(StatusCodes.Status400BadRequest, "bad id", p) : null;

    /// <summary>201 with its location for a new run or sweep; 200 with the same body for one this seed already had (a submission again, nothing created).</summary>
    private static IResult Accepted(string location, Submitted submitted)
    {
        if (!submitted.AlreadyKnown) return Results.Created(location, submitted);
        return Results.Json(submitted, ApiJson.Options);
    }

    /// <summary>Why run `id` has no result.json: no such run, an ended run that never will (its status.json's state), or one still going.</summary>
    private static string NoResult(NodeOptions options, string id)
    {
        if (RunFile(options, id, "") is null) return $"no run {id}";
        try
        {
            if (RunFile(options, id, "status.json") is { } f)
            {
                using var status = JsonDocument.Parse(File.ReadAllText(f));
                if (status.RootElement.GetProperty("state").GetString() is { } state && state is "cancelled" or "failed")
                    return $"run {id} was {state}: it has no result";
            }
        }
        catch (Exception e) when (e is IOException or JsonException or KeyNotFoundException or InvalidOperationException) { }
        return $"run {id} has no result yet";
    }

    /// <summary>404 for a run this seed's runs directory has no directory of (its metrics, events and samples live there).</summary>
    private static IResult? NoRun(NodeOptions options, string id) => RunFile(options, id, "") is null ? NotFound($"no run {id}") : null;

    /// <summary>A file of run `id`'s directory, if it is there (name "": the directory itself); null for an id that is not a run id.</summary>
    private static string? RunFile(NodeOptions options, string id, string name)
    {
        if (EntityId.RunIdProblem(id) is not null) return null;
        var path = Path.GetFullPath(Path.Combine(options.RunsDir, id, name));
        return File.Exists(path) || name.Length == 0 && Directory.Exists(path) ? path : null;
    }

    /// <summary>metrics.csv rows from the after-th on (a dashboard asks only for new ones).</summary>
    private static List<MetricsRow> Metrics(NodeOptions options, string id, int after)
    {
        var rows = new List<MetricsRow>();
        if (RunFile(options, id, "metrics.csv") is not { } file) return rows;
        var reader = new MetricsCsvReader();
        var index = 0;
        foreach (var line in ReadShared(file))
        {
            if (reader.Read(line) is not { } row || index++ < after) continue;
            // JSON has no NaN or infinity: a value that is not finite is left out of its row
            rows.Add(new MetricsRow(row.Phase, row.Step, row.Seconds, row.Values.Where(kv => double.IsFinite(kv.Value)).ToDictionary()));
        }
        return rows;
    }

    private static List<EventLine> Events(NodeOptions options, string id, int after)
    {
        var events = new List<EventLine>();
        if (RunFile(options, id, "events.log") is not { } file) return events;
        var index = 0;
        foreach (var line in ReadShared(file))
        {
            if (index++ < after || line.Length == 0) continue;
            var space = line.IndexOf(' ');
            var (time, message) = space > 0 ? (line[..space], line[(space + 1)..]) : ("", line);
            events.Add(new EventLine(index - 1, time, KindOf(message), message));
        }
        return events;
    }

    /// <summary>What the dashboard marks on a run's curves.</summary>
    public static string KindOf(string message) =>
        message.Contains("rolled back", StringComparison.Ordinal) || message.Contains("guard:", StringComparison.Ordinal) ? "rollback"
        : message.Contains("resumed", StringComparison.Ordinal) || message.Contains("ready at step", StringComparison.Ordinal) && !message.Contains("ready at step 0 ", StringComparison.Ordinal) ? "failover"
        : message.StartsWith("cancelled", StringComparison.Ordinal) || message.StartsWith("done:", StringComparison.Ordinal) || message.Contains("failed", StringComparison.Ordinal) ? "end"
        : "info";

    private static List<SampleGrid> Samples(NodeOptions options, string id)
    {
        var dir = Path.Combine(options.RunsDir, id, "samples");
        if (!Directory.Exists(dir)) return [];
        return Directory.EnumerateFiles(dir, "*.png").Select(Path.GetFileName).OfType<string>()
            .Select(f => SampleName().Match(f)).Where(m => m.Success)
            .Select(m => new SampleGrid(m.Value, m.Groups[1].Value, long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture)))
            .OrderBy(s => s.Step).ThenBy(s => s.Phase, StringComparer.Ordinal).ToList();
    }

    [GeneratedRegex(@"^([a-z]+(?:-\d+)?)-step(\d{7})\.png$")]
    private static partial Regex SampleName();

    /// <summary>The lines of a file another process appends to.</summary>
    private static IEnumerable<string> ReadShared(string file)
    {
        using var s = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var r = new StreamReader(s);
        while (r.ReadLine() is { } line) yield return line;
    }

    /// <summary>Every run, or none while the coordinator cannot answer (the nodes are shown without their runs).</summary>
    private static async Task<RunSummary[]> RunsOrNone(ClusterNode n, CancellationToken ct)
    {
        try { return await RunClient.StatusAsync(n.Coordinator, null, AskTimeout, ct); }
        catch (Exception e) when (e is AskTimeoutException or CoordinatorUnavailableException) { return []; }
    }

    /// <summary>The cluster's members, each with the runs whose student or source it hosts.</summary>
    private static List<NodeView> Nodes(ClusterNode n, RunSummary[] runs)
    {
        var state = Akka.Cluster.Cluster.Get(n.System).State;
        return state.Members.OrderBy(m => m.Address.ToString(), StringComparer.Ordinal).Select(m =>
        {
            var address = $"{m.Address.Host}:{m.Address.Port}";
            var hosted = runs.Where(r => r.State is RunState.Training or RunState.PreparingTeacher && (r.Node?.Split(", ").Contains(address) == true || r.GeneratorNode == address))
                .Select(r => r.RunId).ToArray();
            return new NodeView(address, m.Status.ToString().ToLowerInvariant(), m.Roles.Order(StringComparer.Ordinal).ToArray(),
                Roles.SlotsOf(m.Roles), !state.Unreachable.Contains(m), hosted);
        }).ToList();
    }

    /// <summary>
    /// Server-sent events: "status" with every run, sweep and node whenever any of them changes
    /// (checked each second), and a comment every 15 s so that proxies keep the stream open.
    /// </summary>
    private static async Task Stream(HttpContext context, Func<ClusterNode?> node)
    {
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        context.Response.Headers["X-Accel-Buffering"] = "no";
        var ct = context.RequestAborted;
        string? last = null;
        var quiet = DateTime.UtcNow;
        NodeMetrics.EventStreams.Inc();
        try
        {
            while (!ct.IsCancellationRequested)
            {
                if (node() is { } n)
                {
                    try
                    {
                        var runs = await RunClient.StatusAsync(n.Coordinator, null, AskTimeout, ct);
                        var sweeps = await SweepClient.StatusAsync(n.Sweeps, null, AskTimeout, ct);
                        var nodes = Nodes(n, runs);
                        var json = JsonSerializer.Serialize(new { runs, sweeps, nodes }, ApiJson.Options);
                        if (json != last)
                        {
                            await context.Response.WriteAsync($"event: status\ndata: {json}\n\n", ct);
                            await context.Response.Body.FlushAsync(ct);
                            last = json;
                            quiet = DateTime.UtcNow;
                        }
                    }
                    catch (Exception e) when (e is AskTimeoutException or CoordinatorUnavailableException) { }
                }
                if (DateTime.UtcNow - quiet > TimeSpan.FromSeconds(15))
                {
                    await context.Response.WriteAsync(": keep-alive\n\n", ct);
                    await context.Response.Body.FlushAsync(ct);
                    quiet = DateTime.UtcNow;
                }
                await Task.Delay(1000, ct);
            }
        }
        catch (OperationCanceledException) { }   // the client went away
        finally { NodeMetrics.EventStreams.Dec(); }
    }

    private static IResult ResultsOf(NodeOptions options, string? sweep, string? runs, string? metric)
    {
        try
        {
            ResultsTable table;
            if (sweep is not null)
            {
                if (SweepIdProblem(sweep) is { } bad) return bad;
                var dir = Path.Combine(options.SweepsPath, sweep);
                if (!File.Exists(Path.Combine(dir, "trials.csv"))) return NotFound($"no sweep {sweep} with results (no trials.csv)");
                table = ResultsTable.FromSweep(dir, metric);
            }
            else
            {
                var ids = (runs ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                if (ids.Length == 0) return Problem(StatusCodes.Status400BadRequest, "bad request", "say ?sweep=ID or ?runs=ID,ID");
                foreach (var id in ids)
                {
                    if (RunIdProblem(id) is { } bad) return bad;
                    if (RunFile(options, id, "result.json") is null) return NotFound(NoResult(options, id));
                }
                table = ResultsTable.FromRuns(ids.Select(id => Path.Combine(options.RunsDir, id)).ToList(), metric ?? "student_accuracy");
            }
            return Results.Json(new ResultsView(table.Format(), table.ToCsv(), table.ToJson()), ApiJson.Options);
        }
        catch (InputException e) { return Problem(StatusCodes.Status400BadRequest, "bad request", e.Message); }
        catch (Exception e) when (e is IOException or InvalidDataException or FormatException)
        {
            return Problem(StatusCodes.Status500InternalServerError, "results unreadable", e.Message);
        }
    }
}
