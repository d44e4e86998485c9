using System.CommandLine;
using Distill.Engine.Specs;

namespace Cluster.Seed.Commands;

/// <summary>`validate`: check specs without running them.</summary>
internal static class ValidateCommand
{
    public static Command Create(TextWriter stdout)
    {
        var specs = CommandLine.SpecArgument<string[]>("specs", "run specs (YAML)");
        specs.Arity = ArgumentArity.OneOrMore;
        var command = new Command("validate", "check specs without running them") { specs };
        command.SetAction(p =>
        {
            foreach (var f in p.GetValue(specs)!)
            {
                var s = SpecParser.Load(f);
                stdout.WriteLine($"{f}: ok ({s.Method.Name}, {s.Data.Name}, student {s.Student.Arch})");
            }
            return 0;
        });
        return command;
    }
}
