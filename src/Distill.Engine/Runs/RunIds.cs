using System.Security.Cryptography;

namespace Distill.Engine.Runs;

/// <summary>
/// Run ids, made here only: the spec's name, the UTC time to the second and four random hex
/// digits, so that two runs of one spec started in the same second are two runs. The name is
/// reduced to the characters a run id may hold ([A-Za-z0-9._-]; they name folders and entities).
/// </summary>
public static class RunIds
{
    public static string New(string specName, DateTime? utcNow = null)
    {
        var name = new string(specName.Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' ? c : '-').ToArray()).TrimStart('.');
        if (name.Length == 0) name = "run";
        if (name.Length > 90) name = name[..90];
        return $"{name}-{utcNow ?? DateTime.UtcNow:yyyyMMdd-HHmmss}-{Convert.ToHexString(RandomNumberGenerator.GetBytes(2)).ToLowerInvariant()}";
    }

    /// <summary>The run that trains a compare_baseline run's student alone, on the actors.</summary>
    public static string Baseline(string runId) => runId + "-baseline";
}
