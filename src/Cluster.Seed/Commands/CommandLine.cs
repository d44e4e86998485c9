using System.CommandLine;
using Cluster.Contracts;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Distill.Engine.Specs;

namespace Cluster.Seed.Commands;

/// <summary>
/// The control plane's command line (System.CommandLine): one file per command. Exit codes: 0 ok,
/// 1 the run failed or the cluster could not be reached, 2 bad input (options, specs), 130 interrupted.
/// </summary>
public static class CommandLine
{
    public const string Program = "Cluster.Seed";

    public static RootCommand Build(TextWriter stdout)
    {
        var root = new RootCommand("ClusterDistill: knowledge distillation with or without the teacher's data, embedded or on an Akka.NET cluster");
        root.Add(RunCommand.Create(stdout));
        root.Add(ServeCommand.Create(stdout));
        root.Add(SweepCommand.Create(stdout));
        root.Add(SubmitCommand.Create(stdout));
        root.Add(ResultsCommand.Create(stdout));
        root.Add(StatusCommand.Create(stdout));
        root.Add(CancelCommand.Create(stdout));
        root.Add(ValidateCommand.Create(stdout));
        root.Add(MethodsCommand.Create(stdout));
        root.Add(DataCommand.Create(stdout));
        root.Add(BenchCommand.Create(stdout));
        root.Add(BenchCommand.CreatePeer(stdout));
        return root;
    }

    public static int Dispatch(string[] args, TextWriter stdout, TextWriter stderr)
    {
        try
        {
            return CommandRunner.Invoke(Program, Build(stdout), args, stdout, stderr);
        }
        catch (SpecException e)
        {
            stderr.WriteLine($"spec refused: {e.Message}");
            return 2;
        }
        catch (InputException e)
        {
            stderr.WriteLine(NodeLogger.Fatal(args, Program, e.Message));
            return 2;
        }
        catch (Cluster.Node.Http.ApiProblemException e) when ((int)e.Status is >= 400 and < 500)
        {
            // the seed refused what was asked (no such run, a bad metric, a wrong token): bad input, as the same request made locally is
            stderr.WriteLine(NodeLogger.Fatal(args, Program, e.Message));
            return 2;
        }
        catch (Exception e) when (e is FileNotFoundException or InvalidDataException or ArgumentException or InvalidOperationException
                                       or PersistenceUnavailableException or TimeoutException or Cluster.Node.Http.ApiUnreachableException or Akka.Actor.AskTimeoutException or CoordinatorUnavailableException)
        {
            stderr.WriteLine(NodeLogger.Fatal(args, Program, e.Message));
            return 1;
        }
    }

    /// <summary>
    /// A --run-id option, refused while the command line is parsed unless it is a run id (it names
    /// a folder under the runs directory: no path, no '..'), so that nothing touches the disk first.
    /// </summary>
    internal static Option<string?> RunIdOption(string description)
    {
        var o = new Option<string?>("--run-id") { Description = description };
        o.Validators.Add(r => { if (r.GetValueOrDefault<string?>() is { } id && EntityId.RunIdProblem(id) is { } problem) r.AddError(problem); });
        return o;
    }

    /// <summary>The run-id argument (cancel), checked as <see cref="RunIdOption"/> is.</summary>
    internal static Argument<string> RunIdArgument(string description)
    {
        var a = new Argument<string>("run-id") { Description = description };
        a.Validators.Add(r => { if (r.GetValueOrDefault<string>() is { } id && EntityId.RunIdProblem(id) is { } problem) r.AddError(problem); });
        return a;
    }

    /// <summary>A spec file argument (one, or several): a token that looks like an option is refused as an unknown option, not read as a file.</summary>
    internal static Argument<T> SpecArgument<T>(string name, string description)
    {
        var a = new Argument<T>(name) { Description = description };
        a.Validators.Add(r =>
        {
            foreach (var t in r.Tokens.Where(t => t.Value.StartsWith('-')))
                r.AddError($"unknown option '{t.Value}'");
        });
        return a;
    }
}
