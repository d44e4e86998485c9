using System.CommandLine;
using Cluster.Node.Http;

namespace Cluster.Seed.Commands;

/// <summary>How a CLI command reaches the seed's API: --server (or CLUSTERDISTILL_SERVER) and the token's file.</summary>
internal sealed class ApiOptions
{
    public Option<string?> Server { get; } = new("--server")
    {
        Description = $"the seed's API, http://HOST:PORT (default: ${ApiClient.EnvServer}, else {ApiClient.DefaultServer})",
    };

    public Option<string?> TokenFile { get; } = TokenFileOption($"the API token's file (default: ${ApiToken.EnvToken}, else ${ApiToken.EnvFile}, else ~/.clusterdistill/token)");

    public static Option<string?> TokenFileOption(string description) => new("--token-file") { Description = description };

    public Option<double> Timeout { get; } = new("--timeout")
    {
        Description = "seconds to wait for each answer from the seed (the seed itself waits up to 20 s for its cluster); a seed that accepts and does not answer is an error after this",
        DefaultValueFactory = _ => 30,
    };

    public void AddTo(Command command)
    {
        command.Add(Server);
        command.Add(TokenFile);
        command.Add(Timeout);
    }

    /// <summary>Whether the command was pointed at a seed (option or environment).</summary>
    public bool Given(ParseResult p) => p.GetValue(Server) is not null || Environment.GetEnvironmentVariable(ApiClient.EnvServer) is { Length: > 0 };

    public ApiClient Client(ParseResult p)
    {
        var seconds = p.GetValue(Timeout);
        if (!(seconds is > 0 and <= 3600))
            throw new Distill.Engine.Specs.InputException($"--timeout {seconds}: give the seconds to wait for an answer, more than 0 and at most 3600");
        return new(ApiClient.ServerOf(p.GetValue(Server)), ApiToken.ForClient(p.GetValue(TokenFile)), TimeSpan.FromSeconds(seconds));
    }
}
