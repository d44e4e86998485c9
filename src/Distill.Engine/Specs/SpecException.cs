namespace Distill.Engine.Specs;

/// <summary>A run spec was refused: names the file, the key and the reason.</summary>
public sealed class SpecException(string file, string key, string reason, int line = 0)
    : Exception($"{file}{(line > 0 ? $":{line}" : "")}: {(key.Length > 0 ? $"'{key}': " : "")}{reason}")
{
    public string File { get; } = file;
    public string Key { get; } = key;
    public string Reason { get; } = reason;
}
