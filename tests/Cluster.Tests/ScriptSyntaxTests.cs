using System.Diagnostics;

namespace Cluster.Tests;

/// <summary>
/// Every shell script in the repository parses (`bash -n`): a script that CI does not run, such as
/// deploy/k8s/make-secrets.sh, would otherwise first fail in a user's hands.
/// </summary>
public sealed class ScriptSyntaxTests
{
    [Fact]
    public void Every_shell_script_parses()
    {
        var list = new ProcessStartInfo("git", ["ls-files", "*.sh", "**/*.sh", ".ci/run"]) { RedirectStandardOutput = true, WorkingDirectory = Repo.Root() };
        using var git = Process.Start(list)!;
        var scripts = git.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries).Distinct().ToList();
        git.WaitForExit();
        Assert.Contains("deploy/k8s/make-secrets.sh", scripts);
        var broken = new List<string>();
        foreach (var script in scripts)
        {
            var psi = new ProcessStartInfo("bash", ["-n", script]) { RedirectStandardError = true, WorkingDirectory = Repo.Root() };
            using var bash = Process.Start(psi)!;
            var error = bash.StandardError.ReadToEnd();
            bash.WaitForExit();
            if (bash.ExitCode != 0) broken.Add($"{script}: {error.Trim()}");
        }
        Assert.True(broken.Count == 0, string.Join("\n", broken));
    }
}
