namespace Distill.Engine.Specs;

/// <summary>
/// Bad input other than a spec's text: an option's value, or a folder or file that is not what the
/// command was told it is. Nothing has been written; the command line exits 2, as for a spec.
/// </summary>
public sealed class InputException(string message) : Exception(message);
