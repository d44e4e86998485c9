using System.Text.Json.Serialization;

namespace Distill.Engine.Runs;

/// <summary>result.json: what a run achieved.</summary>
public sealed record RunResult
{
    [JsonPropertyName("run_id")] public required string RunId { get; init; }
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("method")] public required string Method { get; init; }
    [JsonPropertyName("dataset")] public required string Dataset { get; init; }
    [JsonPropertyName("teacher_arch")] public string? TeacherArch { get; init; }
    [JsonPropertyName("student_arch")] public required string StudentArch { get; init; }
    [JsonPropertyName("teacher_accuracy")] public double? TeacherAccuracy { get; init; }
    /// <summary>The final student on the test set.</summary>
    [JsonPropertyName("student_accuracy")] public required double StudentAccuracy { get; init; }
    /// <summary>The best evaluation during training: on the validation split where the spec holds one out, else on the test set.</summary>
    [JsonPropertyName("best_student_accuracy")] public double BestStudentAccuracy { get; init; }
    /// <summary>The final student on the validation split (data.validation); null without one.</summary>
    [JsonPropertyName("validation_accuracy")] public double? ValidationAccuracy { get; init; }
    [JsonPropertyName("test_images")] public long? TestImages { get; init; }
    [JsonPropertyName("student_test_errors")] public long? StudentTestErrors { get; init; }
    [JsonPropertyName("teacher_test_errors")] public long? TeacherTestErrors { get; init; }
    [JsonPropertyName("baseline_test_errors")] public long? BaselineTestErrors { get; init; }
    [JsonPropertyName("baseline_accuracy")] public double? BaselineAccuracy { get; init; }
    [JsonPropertyName("steps")] public required long Steps { get; init; }
    [JsonPropertyName("wall_seconds")] public required double WallSeconds { get; init; }
    /// <summary>Time to obtain the teacher and whether it came from the cache; null only where a restarted teacher entity could not tell.</summary>
    [JsonPropertyName("teacher_seconds")] public double? TeacherSeconds { get; init; }
    [JsonPropertyName("teacher_from_cache")] public bool? TeacherFromCache { get; init; }
    [JsonPropertyName("device")] public required string Device { get; init; }
    [JsonPropertyName("seed")] public required int Seed { get; init; }
    /// <summary>Guard rollbacks: the engine loop's (generator and student together), or through the actors the student's.</summary>
    [JsonPropertyName("rollbacks")] public int Rollbacks { get; init; }
    /// <summary>Through the actors, the source's own guard rollbacks over the run, as it last reported them (null: the engine loop, or no report).</summary>
    [JsonPropertyName("source_rollbacks")] public int? SourceRollbacks { get; init; }
    [JsonPropertyName("student_used_real_data")] public required bool StudentUsedRealData { get; init; }
    [JsonPropertyName("synthesised_images")] public long SynthesisedImages { get; init; }
    /// <summary>"engine" (one loop in one process) or "actors (...)" (the cluster pipeline).</summary>
    [JsonPropertyName("pipeline")] public string Pipeline { get; init; } = "engine";
}
