namespace Distill.Engine.Interop;

/// <summary>A weights file that cannot be read or does not fit the model: the message names the file and the problem.</summary>
public sealed class WeightFileException(string path, string problem, Exception? inner = null)
    : IOException($"{path}: {problem}", inner)
{
    public string FilePath { get; } = path;
    public string Problem { get; } = problem;
}
