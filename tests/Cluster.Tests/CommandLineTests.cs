using Cluster.Seed.Commands;
using Distill.Engine.Methods;
using Distill.Engine.Runs;
using Sweeps = Cluster.Contracts.Sweeps;

namespace Cluster.Tests;

/// <summary>The command line refuses what it does not know, by name, and helps on every command.</summary>
[Collection(TorchLane.Name), TorchLane]
public sealed class CommandLineTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (o, e) = (new StringWriter(), new StringWriter());
        var code = CommandLine.Dispatch(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    private static string Spec(string name) => Path.Combine(Repo.Root(), "specs", name);

    [Theory]
    [InlineData("validate", "kd-mnist.yaml", "--devcie", "gpu")]
    [InlineData("run", "kd-mnist.yaml", "--devcie", "gpu")]
    [InlineData("submit", "kd-mnist.yaml", "--server", "http://127.0.0.1:1", "--sead", "3")]
    [InlineData("status", "--server", "http://127.0.0.1:1", "--run", "x")]
    [InlineData("bench", "--quik")]
    [InlineData("data", "fetch", "mnist", "--quik")]
    public void Should_refuse_an_unknown_option_with_its_name(params string[] args)
    {
        var a = args.Select(x => x.EndsWith(".yaml") ? Spec(x) : x).ToArray();
        var (code, output, err) = Run(a);
        Assert.Equal(2, code);
        Assert.Contains(args.First(x => x.StartsWith("--") && x is not ("--server")), err);
        Assert.DoesNotContain("ok (", output);
        // the help to see is the command's, subcommands included
        Assert.Contains($"see 'Cluster.Seed {string.Join(' ', args.TakeWhile(x => !x.StartsWith("--") && !x.EndsWith(".yaml") && x != "mnist"))} --help'", err);
        // one error line, naming the first unknown word (its value is not a second error), and where to look
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 2, err);
    }

    [Theory]
    [InlineData("frobnicate")]
    [InlineData("frobnicate", "--x", "1")]
    public void Should_name_an_unknown_command_in_one_line(params string[] args)
    {
        var (code, _, err) = Run(args);
        Assert.Equal(2, code);
        Assert.Equal(["error: Unrecognized command or argument 'frobnicate'.", "see 'Cluster.Seed --help'"], err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')));
    }

    [Theory]
    [InlineData("--discovery", "dns", "--discovery 'dns': expected kubernetes, or config:HOST:PORT")]
    [InlineData("--discovery", "config:127.0.0.1", "--discovery: '127.0.0.1' is not HOST:PORT")]
    [InlineData("--discovery", "config:", "--discovery config: names no endpoint")]
    [InlineData("--contact-points", "0", "--contact-points 0: an integer from 1 to 100")]
    [InlineData("--contact-points", "abc", "--contact-points abc: an integer from 1 to 100")]
    [InlineData("--seeds", "notahostport", "--seeds notahostport: not host:port (port 1-65535)")]
    [InlineData("--seeds", "127.0.0.1:4053,seed-1", "--seeds seed-1: not host:port (port 1-65535)")]
    [InlineData("--management-port", "70000", "--management-port 70000: 0-65535")]
    public void Should_refuse_a_bad_discovery_setting_before_anything_starts(string option, string value, string named)
    {
        var (code, _, err) = Run(["serve", option, value, "--http-port", "off"]);
        Assert.Equal(2, code);
        Assert.Contains(named, err);
    }

    [Fact]
    public void Should_refuse_seeds_and_discovery_together_and_tls_material_that_is_not_there()
    {
        var (code, _, err) = Run(["serve", "--seeds", "127.0.0.1:4053", "--discovery", "kubernetes", "--http-port", "off"]);
        Assert.Equal(2, code);
        Assert.Contains("--seeds and --discovery: give one of them", err);
        var missing = Path.Combine(Path.GetTempPath(), $"cd-no-tls-{Guid.NewGuid():N}");
        (code, _, err) = Run(["serve", "--tls", missing, "--http-port", "off", "--store", Path.Combine(missing, "store")]);
        Assert.Equal(1, code);
        Assert.Contains($"TLS: {Path.Combine(missing, "tls.crt")} is missing", err);
        Assert.False(Directory.Exists(missing), "a refused start created its store");
    }

    [Theory]
    [InlineData("run", "--device", "tpu", "--device tpu: cpu, cuda or auto")]
    [InlineData("run", "--seed", "-3", "--seed -3: a non-negative integer")]
    [InlineData("submit", "--device", "tpu", "--device tpu: cpu, cuda or auto")]
    [InlineData("submit", "--seed", "x", "--seed x: a non-negative integer")]
    public void Should_refuse_a_bad_override_on_run_and_submit(string command, string option, string value, string named)
    {
        string[] where = command == "submit" ? ["--server", "http://127.0.0.1:1"] : [];
        var (code, _, err) = Run([command, Spec("kd-mnist.yaml"), .. where, option, value]);
        Assert.Equal(2, code);
        Assert.Contains(named, err);
    }

    /// <summary>The cluster's processes read a spec's files themselves: submit says which paths are relative, before it contacts the seed.</summary>
    [Fact]
    public void Should_say_which_paths_of_a_submitted_spec_are_relative()
    {
        var (code, output, err) = Run("submit", Spec("dafl-cifar10.yaml"), "--server", "http://127.0.0.1:1");
        Assert.NotEqual(0, code);
        Assert.Contains("error:", err);
        Assert.Contains("note: data.path 'data/cifar-10-batches-bin' is relative", output);
        Assert.Contains("note: teacher.checkpoint 'teachers/cifar10-resnet34.pth' is relative", output);
        Assert.DoesNotContain("note:", Run("submit", Spec("kd-mnist.yaml"), "--server", "http://127.0.0.1:1").Out);
    }

    [Theory]
    [InlineData("run")]
    [InlineData("serve")]
    [InlineData("submit")]
    [InlineData("status")]
    [InlineData("validate")]
    [InlineData("methods")]
    [InlineData("bench")]
    public void Should_answer_help_on_every_command(string command)
    {
        var (code, output, err) = Run(command, "--help");
        Assert.Equal(0, code);
        Assert.Contains($"{command}", output);
        Assert.Contains("Usage:", output);
        Assert.Equal("", err);
    }

    [Fact]
    public void Should_list_every_registered_method_with_its_keys()
    {
        var (code, output, _) = Run("methods");
        Assert.Equal(0, code);
        foreach (var m in MethodRegistry.All) Assert.Contains($"{m.Name}  (", output);
        Assert.Contains("kd.temperature", output);
        Assert.Contains("deepinversion.competition_weight", output);
        // and the keys every spec shares
        Assert.Contains("keys of every spec", output);
        foreach (var key in new[] { "data.validation", "student.train.lr", "guard.check_every", "cluster.replicas" })
            Assert.Matches($@"\n    {System.Text.RegularExpressions.Regex.Escape(key)} ", output);
        var (_, markdown, _) = Run("methods", "--markdown");
        Assert.Equal(MethodCatalog.Markdown(), markdown);
    }

    [Fact]
    public void Should_validate_specs_and_refuse_a_bad_one_with_exit_code_2()
    {
        Assert.Equal(0, Run("validate", Spec("kd-mnist.yaml"), Spec("adi-mnist.yaml")).Code);
        var bad = Path.Combine(Path.GetTempPath(), $"cd-bad-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(bad, File.ReadAllText(Spec("kd-mnist.yaml")).Replace("temperature: 4", "temprature: 4"));
        try
        {
            var (code, _, err) = Run("validate", bad);
            Assert.Equal(2, code);
            Assert.Contains("'kd.temprature': unknown key", err);
            // every file is checked, a bad one among them, run and sweep specs alike
            var folder = Path.GetDirectoryName(bad)!;
            (code, var output, err) = Run("validate", Spec("kd-mnist.yaml"), bad, Spec("sweeps/kd-mnist-grid-asha.yaml"), folder, Spec("adi-mnist.yaml"));
            Assert.Equal(2, code);
            Assert.Contains($"{Spec("kd-mnist.yaml")}: ok (kd,", output);
            Assert.Contains($"{Spec("sweeps/kd-mnist-grid-asha.yaml")}: ok (sweep of kd over student.train.lr, kd.temperature, kd.alpha;", output);
            Assert.Contains($"{Spec("adi-mnist.yaml")}: ok (adi,", output);
            Assert.Contains("'kd.temprature': unknown key", err);
            Assert.Contains($"{folder}: a folder, not a spec file", err);
            // a missing spec is said alike by validate and run
            var nowhere = Path.Combine(folder, $"none-{Guid.NewGuid():N}.yaml");
            foreach (var command in new[] { "validate", "run" })
            {
                (code, _, err) = Run(command, nowhere);
                Assert.Equal(2, code);
                Assert.Contains($"{nowhere}: file not found", err);
            }
        }
        finally { File.Delete(bad); }
    }

    /// <summary>A --server that is not a URL and a token file too short to be a token are bad input (exit 2), said before anything is asked.</summary>
    [Fact]
    public void Should_refuse_a_server_that_is_not_a_url_and_a_token_too_short_as_bad_input()
    {
        var (code, _, err) = Run("status", "--server", "notaurl");
        Assert.Equal(2, code);
        Assert.Contains("--server 'notaurl': expected the seed's API as http://HOST:PORT", err);
        var token = Path.Combine(Path.GetTempPath(), $"cd-token-{Guid.NewGuid():N}");
        File.WriteAllText(token, "short");
        try
        {
            (code, _, err) = Run("status", "--server", "http://127.0.0.1:1", "--token-file", token);
            Assert.Equal(2, code);
            Assert.Contains($"the API token in {token} must be at least 16 printable ASCII characters", err);
        }
        finally { File.Delete(token); }
    }

    /// <summary>`cancel` of a run not in a --runs-dir that was typed is refused there; without --runs-dir it goes to the seed's API (the default server).</summary>
    [Fact]
    public void Should_cancel_through_the_api_unless_a_runs_dir_is_named()
    {
        var runs = Path.Combine(Path.GetTempPath(), $"cd-cancel-{Guid.NewGuid():N}");
        var (code, _, err) = Run("cancel", "zz", "--runs-dir", runs);
        Assert.Equal(2, code);
        Assert.Contains($"no embedded run zz in {runs}", err);
        (code, _, err) = Run("cancel", "zz", "--token-file", Path.Combine(runs, "none"));
        Assert.Equal(2, code);   // a token not configured is bad input, as a token too short is
        Assert.DoesNotContain("no embedded run", err);
        Assert.Contains("no API token", err);   // on its way to the API: the token it needs is not there
    }

    /// <summary>A second `run` of one run id while the first still runs would write the same journal: refused, and nothing written.</summary>
    [Fact]
    public void Should_refuse_a_run_whose_id_another_process_is_running()
    {
        var runs = Path.Combine(Path.GetTempPath(), $"cd-held-{Guid.NewGuid():N}");
        var dir = Path.Combine(runs, "r1");
        Directory.CreateDirectory(dir);
        try
        {
            // the lock a running `run` holds (an exclusive lock on the run directory's .lock)
            using (new FileStream(Path.Combine(dir, ".lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None))
            {
                var (code, output, err) = Run("run", Spec("kd-mnist.yaml"), "--runs-dir", runs, "--run-id", "r1");
                Assert.Equal(1, code);
                Assert.Contains($"run r1 is running in another process already ({Path.Combine(dir, ".lock")} is held)", err);
                Assert.DoesNotContain("[run]", output);
                Assert.False(File.Exists(Path.Combine(dir, "submitted.yaml")));
                Assert.False(File.Exists(Path.Combine(dir, "journal.db")));
            }
        }
        finally { Directory.Delete(runs, recursive: true); }
    }

    /// <summary>A spec this machine cannot run (a file it names is not here; CUDA asked for where there is none) is refused before a run is made of it.</summary>
    [Fact]
    public void Should_refuse_a_run_this_machine_cannot_make_before_its_directory_exists()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"cd-cannot-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var spec = Path.Combine(dir, "s.yaml");
            File.WriteAllText(spec, File.ReadAllText(Spec("kd-mnist.yaml")).Replace(
                "teacher:\n  arch: lenet5\n  train: {epochs: 5, batch_size: 256, optimizer: adam, lr: 0.001}\n", "teacher:\n  arch: lenet5\n  checkpoint: elsewhere/t.pt\n"));
            var runs = Path.Combine(dir, "runs");
            foreach (var engine in new[] { false, true })
            {
                var (code, _, err) = Run([.. new[] { "run", spec, "--runs-dir", runs, "--run-id", "m1" }, .. engine ? ["--engine"] : Array.Empty<string>()]);
                Assert.Equal(2, code);
                Assert.Contains("not found on this machine: 'teacher.checkpoint' elsewhere/t.pt (a relative path is read from the current directory", err);
                Assert.False(Directory.Exists(runs), "a refused run left a directory");
            }
            // an absolute path gets no word on relative ones; a folder where a file is meant is named so
            var absolute = Path.Combine(dir, "abs.yaml");
            File.WriteAllText(absolute, File.ReadAllText(spec).Replace("checkpoint: elsewhere/t.pt", $"checkpoint: {dir}"));
            var (absCode, _, absErr) = Run("validate", absolute);
            Assert.Equal(2, absCode);
            Assert.Contains($"not found on this machine: 'teacher.checkpoint' {dir} (a folder: it names a file); the rest of the spec is valid", absErr);
            Assert.DoesNotContain("relative path", absErr);
            // a teacher file that is there but does not fit its architecture: validate and run read it first
            var teacherFile = Path.Combine(dir, "t.pt");
            var there = Path.Combine(dir, "there.yaml");
            File.WriteAllText(there, File.ReadAllText(spec).Replace("checkpoint: elsewhere/t.pt", $"checkpoint: {teacherFile}"));
            foreach (var (content, reason) in new (Action<string>, string)[]
                     {
                         (f => File.WriteAllText(f, "these are not weights\n"), "not a PyTorch (torch.save), safetensors or ClusterDistill weights file"),
                         (f => File.WriteAllBytes(f, []), "the file is empty"),
                         (f => { TorchSharp.torch.manual_seed(1); using var wrong = Distill.Engine.Models.ModelFactory.Create("lenet5-half", 1, 32, 10); wrong.save(f); }, "ClusterDistill weights do not fit lenet5 (1x32x32, 10 classes): "),
                     })
            {
                content(teacherFile);
                var (v, _, verr) = Run("validate", there);
                Assert.Equal(2, v);
                Assert.Contains("'teacher.checkpoint': ", verr);
                Assert.Contains(reason, verr);
                var (code, _, err) = Run("run", there, "--runs-dir", runs, "--run-id", "m1");
                Assert.Equal(2, code);
                Assert.Contains("'teacher.checkpoint': ", err);
                Assert.False(Directory.Exists(runs), "a refused run left a directory");
            }
            // the right weights pass
            TorchSharp.torch.manual_seed(1);
            using (var right = Distill.Engine.Models.ModelFactory.Create("lenet5", 1, 32, 10)) right.save(teacherFile);
            Assert.Equal(0, Run("validate", there).Code);
            if (TorchSharp.torch.cuda.is_available()) return;
            var (cudaCode, _, cudaErr) = Run("run", Spec("kd-mnist.yaml"), "--device", "cuda", "--runs-dir", runs, "--run-id", "c1");
            Assert.Equal(2, cudaCode);
            Assert.Contains("device: cuda was asked for, but TorchSharp finds no CUDA device", cudaErr);
            Assert.False(Directory.Exists(runs), "a refused run left a directory");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>
    /// A node whose Akka port is taken says so in one line and exits 1 (no stack trace, no abort),
    /// also when the holder allows the port's reuse, as Akka's default does on Linux: another node,
    /// bound beside it, would join with its address and get it downed.
    /// </summary>
    [Theory]
    [InlineData("Cluster.Seed", "serve", false)]
    [InlineData("Cluster.GpuNode", "join", false)]
    [InlineData("Cluster.GpuNode", "join", true)]
    public async Task Should_say_in_one_line_that_the_cluster_port_is_in_use(string program, string command, bool holderAllowsReuse)
    {
        using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        // .NET on Linux sets SO_REUSEADDR and SO_REUSEPORT for this, as DotNetty does for Akka's default tcp-reuse-addr
        if (holderAllowsReuse) taken.Server.SetSocketOption(System.Net.Sockets.SocketOptionLevel.Socket, System.Net.Sockets.SocketOptionName.ReuseAddress, true);
        taken.Start();
        var port = ((System.Net.IPEndPoint)taken.LocalEndpoint).Port;
        var dir = Path.Combine(Path.GetTempPath(), $"cd-port-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var token = Path.Combine(dir, "token");
            File.WriteAllText(token, new string('a', 32));
            string[] args = [command, "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--http-port", "off",
                "--store", Path.Combine(dir, "store"), "--runs-dir", Path.Combine(dir, "runs"),
                .. command == "join" ? new[] { "--seeds", "127.0.0.1:1" } : ["--token-file", token]];
            var psi = new System.Diagnostics.ProcessStartInfo(Path.Combine(Repo.Root(), "src", program, "bin", "Release", "net10.0", program), args)
                { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = System.Diagnostics.Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            using var patience = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await p.WaitForExitAsync(patience.Token);
            var (output, errors) = (await stdout, await stderr);
            var all = output + errors;
            Assert.Equal(1, p.ExitCode);
            Assert.Contains($"error: cannot listen for cluster traffic: Failed to bind to [127.0.0.1:{port}] (Address already in use)", errors);
            Assert.DoesNotContain("   at ", all);
            Assert.DoesNotContain("Unhandled exception", all);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Should_make_distinct_run_ids_for_one_spec_in_one_second()
    {
        var now = new DateTime(2026, 12, 1, 20, 0, 0, DateTimeKind.Utc);
        var ids = Enumerable.Range(0, 50).Select(_ => RunIds.New("kd-mnist", now)).ToList();
        Assert.True(ids.Distinct().Count() >= 49, "four random hex digits: 50 ids in one second collide rarely");
        Assert.All(ids, id => Assert.StartsWith("kd-mnist-20261201-200000-", id));
        Assert.All(ids.Append(RunIds.New("my spec/α")), id => Assert.True(global::Cluster.Contracts.EntityId.IsValidRunId(id), id));
    }

    /// <summary>A run id names a folder under the runs directory: one that would leave it is refused before anything is written.</summary>
    [Theory]
    [InlineData("run", "../../etc")]
    [InlineData("run", "/tmp/elsewhere")]
    [InlineData("run", "a/b")]
    [InlineData("submit", "../x")]
    [InlineData("status", "..")]
    [InlineData("cancel", "../../etc")]
    [InlineData("sweep", "../x")]
    public void Should_refuse_a_run_id_that_leaves_the_runs_directory_before_writing_anything(string command, string id)
    {
        var root = Path.Combine(Path.GetTempPath(), $"cd-ids-{Guid.NewGuid():N}");
        var runs = Path.Combine(root, "a", "b", "runs");
        try
        {
            string[] args = command switch
            {
                "run" => ["run", Spec("kd-mnist.yaml"), "--runs-dir", runs, "--run-id", id],
                "submit" => ["submit", Spec("kd-mnist.yaml"), "--server", "http://127.0.0.1:1", "--run-id", id],
                "status" => ["status", "--server", "http://127.0.0.1:1", "--run-id", id],
                "sweep" => ["sweep", Spec("sweeps/kd-mnist-grid-fifo.yaml"), "--sweeps-dir", runs, "--sweep-id", id],
                _ => ["cancel", id, "--runs-dir", runs],
            };
            var (code, _, err) = Run(args);
            Assert.Equal(2, code);
            // a sweep id is refused as one, for the sweeps' folder
            Assert.Contains(command == "sweep" ? $"sweep id '{id}'" : $"run id '{id}'", err);
            Assert.Contains(command == "sweep" ? "under the sweeps directory" : "under the runs directory", err);
            Assert.False(Directory.Exists(root), $"{command} wrote {string.Join(", ", Directory.Exists(root) ? Directory.GetFileSystemEntries(root, "*", SearchOption.AllDirectories) : [])}");
            Assert.False(Directory.Exists("/tmp/elsewhere"));
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, true);
        }
    }

    /// <summary>The engine loop checks it too (its callers are not only the command line).</summary>
    [Fact]
    public void Should_refuse_an_engine_run_whose_id_leaves_the_runs_directory()
    {
        var root = Path.Combine(Path.GetTempPath(), $"cd-ids-{Guid.NewGuid():N}");
        try
        {
            var runner = new Runner(new RunnerOptions { RunsRoot = Path.Combine(root, "runs"), RunId = "../escaped" }, TextWriter.Null);
            var e = Assert.Throws<ArgumentException>(() => runner.Run(Distill.Engine.Specs.SpecParser.Load(Spec("kd-mnist.yaml"))));
            Assert.Contains("outside the runs directory", e.Message);
            Assert.False(Directory.Exists(Path.Combine(root, "escaped")));
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, true);
        }
    }

    /// <summary>An oversized spec is refused at once with its size and the limit (it used to time out after 77 s).</summary>
    [Theory]
    [InlineData("validate")]
    [InlineData("run")]
    [InlineData("submit")]
    public void Should_refuse_an_oversized_spec_with_its_size_and_the_limit(string command)
    {
        var file = Path.Combine(Path.GetTempPath(), $"cd-big-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(file, File.ReadAllText(Spec("kd-mnist.yaml")) + "# " + new string('x', 2 << 20) + "\n");
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            string[] args = command == "submit" ? [command, file, "--server", "http://127.0.0.1:1"] : [command, file];
            var (code, _, err) = Run(args);
            Assert.Equal(2, code);
            Assert.Contains("over the 1,048,576-byte limit", err);
            Assert.Contains($"{new FileInfo(file).Length:N0} bytes", err);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
        }
        finally { File.Delete(file); }
    }

    /// <summary>A runs or sweeps folder that is a file, or cannot be made, is bad input named with its option, not a crash.</summary>
    [Fact]
    public void Should_refuse_a_runs_or_sweeps_folder_that_cannot_be_one()
    {
        var file = Path.Combine(Path.GetTempPath(), $"cd-notafolder-{Guid.NewGuid():N}");
        File.WriteAllText(file, "a file\n");
        try
        {
            foreach (var args in new[]
                     {
                         new[] { "run", Spec("lsr.yaml"), "--runs-dir", file },
                         new[] { "run", Spec("lsr.yaml"), "--engine", "--runs-dir", file, "--run-id", "x" },
                         new[] { "sweep", Spec("sweeps/kd-mnist-grid-fifo.yaml"), "--sweeps-dir", file },
                     })
            {
                var (code, _, err) = Run(args);
                Assert.True(code == 2, $"{string.Join(' ', args[..2])}: exit {code}: {err}");
                Assert.Contains($"{file} is a file, not a folder", err);
            }
            var (c, _, e) = Run("run", Spec("lsr.yaml"), "--runs-dir", "/proc/cd-not-here");
            Assert.Equal(2, c);
            Assert.Contains("--runs-dir /proc/cd-not-here: the folder cannot be made", e);
            Assert.Equal("a file\n", File.ReadAllText(file));
        }
        finally { File.Delete(file); }
    }

    /// <summary>A run resumed with another spec, or another option that changes it (--seed), is refused naming what differs.</summary>
    [Fact]
    public void Should_name_what_differs_when_a_run_is_resumed_with_another_spec()
    {
        var runs = Path.Combine(Path.GetTempPath(), $"cd-resume-{Guid.NewGuid():N}");
        try
        {
            Directory.CreateDirectory(Path.Combine(runs, "r"));
            File.WriteAllText(Path.Combine(runs, "r", "submitted.yaml"), File.ReadAllText(Spec("lsr.yaml")));
            var (code, _, err) = Run("run", Spec("lsr.yaml"), "--runs-dir", runs, "--run-id", "r", "--seed", "9");
            Assert.Equal(2, code);
            Assert.Contains("run r exists in", err);
            Assert.Contains("with a different spec (seed: 1, now 9)", err);
            Assert.Contains("resume it with the spec and options it was started with", err);
        }
        finally { Directory.Delete(runs, recursive: true); }
    }

    /// <summary>validate checks the files and folders a spec names, and says which are missing.</summary>
    [Fact]
    public void Should_name_the_missing_files_and_folders_a_spec_reads()
    {
        var file = Path.Combine(Path.GetTempPath(), $"cd-paths-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(file, File.ReadAllText(Spec("kd-mnist.yaml"))
            .Replace("  train: {epochs: 5, batch_size: 256, optimizer: adam, lr: 0.001}\nstudent:", "  checkpoint: /nonexistent/teacher.pt\nstudent:"));
        try
        {
            var (code, output, err) = Run("validate", file);
            Assert.Equal(2, code);
            Assert.Contains("'teacher.checkpoint' /nonexistent/teacher.pt", err);
            Assert.DoesNotContain("ok (", output);
            // a sweep over that spec: validate and sweep refuse it before any trial is made
            var sweep = Path.ChangeExtension(file, ".sweep.yaml");
            var sweeps = Path.Combine(Path.GetTempPath(), $"cd-sweeps-{Guid.NewGuid():N}");
            File.WriteAllText(sweep, $"name: missing\nbase: {Path.GetFileName(file)}\nspace:\n  kd.temperature: {{grid: [2, 4]}}\n");
            try
            {
                (code, output, err) = Run("validate", sweep);
                Assert.Equal(2, code);
                Assert.Contains("'teacher.checkpoint' /nonexistent/teacher.pt", err);
                Assert.DoesNotContain("ok (", output);
                (code, _, err) = Run("sweep", sweep, "--sweeps-dir", sweeps);
                Assert.Equal(2, code);
                Assert.Contains("'teacher.checkpoint' /nonexistent/teacher.pt", err);
                Assert.False(Directory.Exists(sweeps), "the refused sweep wrote its directory");
                // a base whose teacher is there, and a grid over teachers of which one is not
                var real = Path.ChangeExtension(file, ".pt");
                TorchSharp.torch.manual_seed(1);
                using (var t = Distill.Engine.Models.ModelFactory.Create("lenet5", 1, 32, 10)) t.save(real);
                File.WriteAllText(file, File.ReadAllText(file).Replace("/nonexistent/teacher.pt", real));
                File.WriteAllText(sweep, $"name: teachers\nbase: {Path.GetFileName(file)}\nspace:\n  teacher.checkpoint: {{grid: [\"{real}\", /nonexistent/other.pt]}}\n");
                (code, output, err) = Run("validate", sweep);
                Assert.Equal(2, code);
                Assert.Contains("'teacher.checkpoint' /nonexistent/other.pt", err);
                File.Delete(real);
            }
            finally
            {
                File.Delete(sweep);
                if (Directory.Exists(sweeps)) Directory.Delete(sweeps, true);
            }
        }
        finally { File.Delete(file); }
    }

    /// <summary>A sweep none of whose trials ended with its metric has no result: it exits 1 and says why the first failed; one with a trial stopped or completed with its metric exits 0.</summary>
    [Fact]
    public void Should_exit_1_for_a_sweep_whose_every_trial_failed()
    {
        static Sweeps.TrialSummary Trial(string id, Sweeps.TrialState state, string? reason = null) =>
            new(id, "run-" + id, ["2"], state, 10, state is Sweeps.TrialState.Failed or Sweeps.TrialState.Cancelled ? null : 97.5, null, 0, 3, reason);
        static Sweeps.SweepSummary Sweep(Sweeps.SweepState state, params Sweeps.TrialSummary[] trials) =>
            new("s1", "s", state, "val_accuracy", "max", ["kd.temperature"], trials, 20, null);
        var o = new StringWriter();
        var failed = Sweeps.TrialState.Failed;
        Assert.Equal(1, SweepCommand.ExitCode(Sweep(Sweeps.SweepState.Completed, Trial("t0", failed, "teacher.checkpoint: x does not exist"), Trial("t1", failed)), o));
        Assert.Contains("s1: no trial ended with its val_accuracy, so the sweep has no result; the first reason: teacher.checkpoint: x does not exist", o.ToString());
        o = new StringWriter();
        Assert.Equal(0, SweepCommand.ExitCode(Sweep(Sweeps.SweepState.Completed, Trial("t0", failed), Trial("t1", Sweeps.TrialState.Stopped)), o));
        Assert.Equal(0, SweepCommand.ExitCode(Sweep(Sweeps.SweepState.Completed, Trial("t0", Sweeps.TrialState.Completed)), o));
        Assert.Equal(1, SweepCommand.ExitCode(Sweep(Sweeps.SweepState.Cancelled, Trial("t0", Sweeps.TrialState.Completed)), o));
        Assert.Equal("", o.ToString());
        // max_wall_minutes cancelled the rest, and the one that failed: no result either
        Assert.Equal(1, SweepCommand.ExitCode(Sweep(Sweeps.SweepState.Completed, Trial("t0", failed, "diverged"), Trial("t1", Sweeps.TrialState.Cancelled, "the sweep's max_wall_minutes")), o));
        Assert.Contains("the first reason: diverged", o.ToString());
    }

    /// <summary>
    /// A journal that cannot be opened is named with the reason at once, and the file is left as
    /// it was: a run directory whose journal.db is not a database, and a PostgreSQL server that
    /// refuses connections.
    /// </summary>
    [Fact]
    public void Should_name_a_journal_that_cannot_be_opened_and_leave_it_as_it_was()
    {
        var runs = Path.Combine(Path.GetTempPath(), $"cd-badjournal-{Guid.NewGuid():N}");
        try
        {
            var journal = Path.Combine(runs, "j1", "journal.db");
            Directory.CreateDirectory(Path.GetDirectoryName(journal)!);
            var garbage = System.Text.Encoding.ASCII.GetBytes("this is not an SQLite file, but it was someone's journal\n");
            File.WriteAllBytes(journal, garbage);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var (code, _, err) = Run("run", Spec("dafl-mnist-quick.yaml"), "--runs-dir", runs, "--run-id", "j1");
            Assert.Equal(1, code);
            Assert.Contains($"the sqlite journal is unreachable (Data Source={journal}", err);
            Assert.Contains("file is not a database", err);
            Assert.Equal(garbage, File.ReadAllBytes(journal));

            (code, _, err) = Run("serve", "--port", "0", "--db", "postgres:Host=127.0.0.1;Port=1;Username=u;Password=secret;Database=d",
                "--store", Path.Combine(runs, "store"), "--runs-dir", runs);
            Assert.Equal(1, code);
            Assert.Contains("the postgres journal is unreachable (Host=127.0.0.1;Port=1", err);
            Assert.DoesNotContain("secret", err);
            // a node that logs JSON says why it stopped in JSON too: a log collector parses every line
            (code, _, err) = Run("serve", "--port", "0", "--log-format", "json", "--db", "postgres:Host=127.0.0.1;Port=1;Username=u;Password=secret;Database=d",
                "--store", Path.Combine(runs, "store"), "--runs-dir", runs);
            Assert.Equal(1, code);
            var line = System.Text.Json.JsonDocument.Parse(err.Trim()).RootElement;
            Assert.Equal("error", line.GetProperty("level").GetString());
            Assert.StartsWith("the postgres journal is unreachable (Host=127.0.0.1;Port=1", line.GetProperty("message").GetString());
            Assert.DoesNotContain("secret", err);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"took {clock.Elapsed}");
        }
        finally { Directory.Delete(runs, recursive: true); }
    }

    /// <summary>A teacher file that is not what the spec says is refused with its name and the reason, before any training.</summary>
    [Fact]
    public void Should_refuse_a_teacher_file_that_is_not_the_specs_architecture()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"cd-badteacher-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var teacher = Path.Combine(dir, "teacher.pt");
            File.WriteAllBytes(teacher, new byte[3000]);
            var spec = Path.Combine(dir, "s.yaml");
            File.WriteAllText(spec, File.ReadAllText(Spec("kd-mnist.yaml")).Replace(
                "teacher:\n  arch: lenet5\n  train: {epochs: 5, batch_size: 256, optimizer: adam, lr: 0.001}\n", $"teacher:\n  arch: lenet5\n  checkpoint: {teacher}\n"));
            Assert.Contains(teacher, File.ReadAllText(spec));
            var (code, output, err) = Run("run", spec, "--engine", "--runs-dir", Path.Combine(dir, "runs"), "--run-id", "t1");
            Assert.Equal(2, code);
            Assert.Contains($"'teacher.checkpoint': {teacher}: not a PyTorch (torch.save), safetensors or ClusterDistill weights file", err);
            Assert.DoesNotContain("step", output);
            // refused as bad input before a run is made of it: the id is not spent
            Assert.False(Directory.Exists(Path.Combine(dir, "runs", "t1")));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Should_refuse_to_run_the_engine_loop_over_a_run_directory_that_holds_a_run()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"cd-engine-over-{Guid.NewGuid():N}");
        var run = Path.Combine(dir, "runs", "kd1");
        Directory.CreateDirectory(Path.Combine(run, "checkpoints"));
        try
        {
            File.WriteAllText(Path.Combine(run, "result.json"), "{\"student_accuracy\": 89.24}");
            File.WriteAllText(Path.Combine(run, "metrics.csv"), "phase,step\n");
            var (code, output, err) = Run("run", Spec("kd-mnist.yaml"), "--engine", "--runs-dir", Path.Combine(dir, "runs"), "--run-id", "kd1");
            Assert.Equal(2, code);
            Assert.Contains("run kd1 exists in", err);
            Assert.Contains("checkpoints, metrics.csv, result.json", err);
            Assert.Contains("give another --run-id or none", err);
            Assert.DoesNotContain("step", output);
            Assert.Equal("{\"student_accuracy\": 89.24}", File.ReadAllText(Path.Combine(run, "result.json")));
            Assert.Equal("phase,step\n", File.ReadAllText(Path.Combine(run, "metrics.csv")));
            Assert.Equal(["checkpoints", "metrics.csv", "result.json"], Directory.EnumerateFileSystemEntries(run).Select(Path.GetFileName).Order());
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
