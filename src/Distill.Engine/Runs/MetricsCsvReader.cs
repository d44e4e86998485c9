using System.Globalization;

namespace Distill.Engine.Runs;

/// <summary>One row of metrics.csv: its phase, step, seconds since the phase began, and the values it logged.</summary>
public sealed record MetricsRecord(string Phase, long Step, double Seconds, IReadOnlyDictionary<string, double> Values);

/// <summary>
/// Reads metrics.csv line by line as <see cref="RunDirectory.Metrics"/> writes it: a header
/// "phase,step,seconds,COLUMNS", then a row per logged step, blank where a phase does not log a
/// column. A run coordinator that took over appends under a header of its own, which this follows.
/// A line that is a header, torn by a concurrent write, or not of the header's width holds no row.
/// </summary>
public sealed class MetricsCsvReader
{
    public const string HeaderStart = "phase,step,seconds";

    private string[]? columns;

    public MetricsRecord? Read(string line)
    {
        line = line.TrimEnd('\r');
        var cells = line.Split(',');
        if (line.StartsWith(HeaderStart, StringComparison.Ordinal))
        {
            columns = cells;
            return null;
        }
        if (columns is null || cells.Length != columns.Length) return null;
        if (!long.TryParse(cells[1], CultureInfo.InvariantCulture, out var step) || !double.TryParse(cells[2], CultureInfo.InvariantCulture, out var seconds)) return null;
        var values = new Dictionary<string, double>();
        for (var c = 3; c < cells.Length; c++)
            if (double.TryParse(cells[c], CultureInfo.InvariantCulture, out var v)) values[columns[c]] = v;
        return new MetricsRecord(cells[0], step, seconds, values);
    }
}
