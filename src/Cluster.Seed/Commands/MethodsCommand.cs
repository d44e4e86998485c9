using System.CommandLine;
using Distill.Engine.Methods;

namespace Cluster.Seed.Commands;

/// <summary>`methods`: every method with its section's keys and defaults, from the registry (docs/methods.md is its --markdown).</summary>
internal static class MethodsCommand
{
    public static Command Create(TextWriter stdout)
    {
        var markdown = new Option<bool>("--markdown") { Description = "print docs/methods.md: the methods and every key of a spec" };
        var command = new Command("methods", "list every method with its keys and defaults") { markdown };
        command.SetAction(p =>
        {
            stdout.Write(p.GetValue(markdown) ? MethodCatalog.Markdown() : MethodCatalog.Text());
            return 0;
        });
        return command;
    }
}
