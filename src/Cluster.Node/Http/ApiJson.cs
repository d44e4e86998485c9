using System.Text.Json;
using System.Text.Json.Serialization;

namespace Cluster.Node.Http;

/// <summary>The API's JSON, for the server and the CLI alike: camelCase, enums as snake_case names.</summary>
public static class ApiJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };
}

/// <summary>POST /api/runs and /api/sweeps: the id the coordinator gave (or kept, for a repeated submission).</summary>
public sealed record Submitted(string Id, bool AlreadyKnown);

/// <summary>A cluster member as /api/nodes shows it, with the runs whose entities it hosts.</summary>
public sealed record NodeView(string Address, string Status, string[] Roles, int Slots, bool Reachable, string[] Runs);

/// <summary>A row of metrics.csv: its phase (generator, student-N), step, seconds since submission, and the values it has.</summary>
public sealed record MetricsRow(string Phase, long Step, double Seconds, Dictionary<string, double> Values);

/// <summary>A line of events.log, with what kind of event it is for the dashboard's curve markers.</summary>
public sealed record EventLine(int Index, string Time, string Kind, string Message);

/// <summary>A sample grid of a run: the file, its phase and step.</summary>
public sealed record SampleGrid(string File, string Phase, long Step);

/// <summary>GET /api/results: the results table as text, CSV and JSON (what `results` prints and writes).</summary>
public sealed record ResultsView(string Table, string Csv, string Json);
