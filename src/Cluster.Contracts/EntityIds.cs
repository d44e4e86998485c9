namespace Cluster.Contracts;

/// <summary>The kinds of sharded entity, one shard region each.</summary>
public static class EntityKinds
{
    public const string Generator = "generator";
    public const string Teacher = "teacher";
    public const string Student = "student";

    public static readonly IReadOnlyList<string> All = [Generator, Teacher, Student];
}

/// <summary>
/// Entity ids are "run/kind/index" (a student's index is its replica). Run ids are restricted to
/// [A-Za-z0-9._-] so that they can name files and never contain the separator.
/// </summary>
public readonly record struct EntityId(string RunId, string Kind, int Index)
{
    public override string ToString() => $"{RunId}/{Kind}/{Index}";

    public static string Generator(string runId) => new EntityId(runId, EntityKinds.Generator, 0).ToString();
    public static string Teacher(string runId) => new EntityId(runId, EntityKinds.Teacher, 0).ToString();
    public static string Student(string runId, int replica) => new EntityId(runId, EntityKinds.Student, replica).ToString();

    public static EntityId Parse(string id)
    {
        var parts = id.Split('/');
        if (parts.Length != 3 || !IsValidRunId(parts[0]) || parts[1] is not (EntityKinds.Generator or EntityKinds.Teacher or EntityKinds.Student)
            || !int.TryParse(parts[2], out var index) || index < 0)
            throw new FormatException($"'{id}' is not an entity id of the form run/generator|teacher|student/index");
        return new EntityId(parts[0], parts[1], index);
    }

    public static bool IsValidRunId(string runId) =>
        runId.Length is > 0 and <= 120 && runId.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-') && runId[0] != '.';

    /// <summary>Why `runId` is not a run id (null when it is): the one wording for every place that refuses one.</summary>
    public static string? RunIdProblem(string runId) => IdProblem(runId, "run");

    /// <summary>Why `sweepId` is not a sweep id (null when it is): sweep ids follow the run ids' rule, since a trial's run id begins with its sweep's.</summary>
    public static string? SweepIdProblem(string sweepId) => IdProblem(sweepId, "sweep");

    private static string? IdProblem(string id, string what) => IsValidRunId(id) ? null :
        $"{what} id '{id}': use letters, digits, '.', '_' and '-' (1-120 of them, not starting with '.'); it names a folder under the {what}s directory";
}
