using System.Diagnostics;
using YamlDotNet.Serialization;

namespace Cluster.Tests.Deploy;

/// <summary>The rendered and validated manifests (scripts/check-k8s.sh), once for the class.</summary>
public sealed class RenderedManifests
{
    public RenderedManifests()
    {
        Work = Path.Combine(Path.GetTempPath(), $"cd-k8s-{Guid.NewGuid():N}");
        var psi = new ProcessStartInfo("bash", [Path.Combine(Repo.Root(), "scripts", "check-k8s.sh"), Work])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Repo.Root(),
        };
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        Output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5))) p.Kill(true);
        Output += err.Result;
        ExitCode = p.HasExited ? p.ExitCode : -1;
    }

    public string Work { get; }
    public string Output { get; }
    public int ExitCode { get; }

    public List<Dictionary<string, object?>> Objects(string overlay) =>
        File.ReadAllText(Path.Combine(Work, overlay + ".yaml")).Split("\n---\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(doc => new DeserializerBuilder().Build().Deserialize<Dictionary<string, object?>>(doc)).ToList();
}

/// <summary>
/// deploy/k8s as a kustomize base with overlays: every overlay renders with kubectl, every object
/// validates against the Kubernetes schemas offline, and a policy holds on every workload (probes,
/// resources, a non-root read-only security context, a network policy and a disruption budget, no
/// secret on a command line).
/// </summary>
public sealed class ManifestTests(RenderedManifests rendered) : IClassFixture<RenderedManifests>
{
    private static readonly string[] Overlays = ["overlays-dev", "overlays-gpu", "overlays-gpu-runtimeclass", "jobs"];

    [Fact]
    public void Every_overlay_renders_and_validates_against_the_Kubernetes_schemas()
    {
        Assert.True(rendered.ExitCode == 0, rendered.Output);
        foreach (var o in new[] { "overlays/dev", "overlays/gpu", "overlays/gpu-runtimeclass", "jobs" })
            Assert.Matches($@"rendered deploy/k8s/{o}: \d+ objects", rendered.Output);
        Assert.Matches(@"fields ok  \d+ objects \(tsc\)", rendered.Output);
        Assert.Matches(@"valid: \d+ objects", rendered.Output);
    }

    [Fact]
    public void Every_workload_has_probes_resources_a_locked_down_security_context_a_network_policy_and_a_disruption_budget()
    {
        Assert.True(rendered.ExitCode == 0, rendered.Output);
        foreach (var overlay in Overlays)
            Assert.True(ManifestPolicy.Problems(rendered.Objects(overlay)) is [] , overlay + ":\n" + string.Join("\n", ManifestPolicy.Problems(rendered.Objects(overlay))));

        // the gpu overlay: one Deployment per pool, each told its pool, placed on its GPUs and tolerating their taint
        var gpu = rendered.Objects("overlays-gpu");
        foreach (var pool in new[] { "h100", "a10" })
        {
            var d = gpu.Single(o => (string?)o["kind"] == "Deployment" && ManifestPolicy.Name(o) == $"clusterdistill-node-{pool}");
            var pod = ManifestPolicy.PodSpec(d)!;
            var node = ManifestPolicy.List(pod, "containers").Single();
            Assert.Contains(ManifestPolicy.List(node, "env"), e => ManifestPolicy.Get(e, "name") as string == "NODE_POOL" && ManifestPolicy.Get(e, "value") as string == pool);
            Assert.StartsWith("clusterdistill-gpu:", (string)ManifestPolicy.Get(node, "image")!);
            Assert.Equal("1", ManifestPolicy.Get(node, "resources", "limits", "nvidia.com/gpu")?.ToString());
            Assert.NotNull(ManifestPolicy.Get(pod, "nodeSelector", "nvidia.com/gpu.product"));
            Assert.Contains(ManifestPolicy.List(pod, "tolerations"), t => ManifestPolicy.Get(t, "key") as string == "nvidia.com/gpu");
            Assert.Equal("clusterdistill-data:0.19.0", ManifestPolicy.Get(ManifestPolicy.List(pod, "initContainers").Single(), "image"));
            Assert.Null(ManifestPolicy.Get(pod, "runtimeClassName"));
        }
        Assert.All(rendered.Objects("overlays-gpu-runtimeclass").Where(o => (string?)o["kind"] == "Deployment"),
            d => Assert.Equal("nvidia", ManifestPolicy.Get(ManifestPolicy.PodSpec(d)!, "runtimeClassName")));
        // no PostgreSQL in the gpu overlay (an external one), one in dev
        Assert.DoesNotContain(gpu, o => ManifestPolicy.Name(o) == "clusterdistill-postgres");
        Assert.Contains(rendered.Objects("overlays-dev"), o => (string?)o["kind"] == "StatefulSet" && ManifestPolicy.Name(o) == "clusterdistill-postgres");

        // the seeds find each other through the Kubernetes API: discovery on, and read access to pods
        var seed = rendered.Objects("overlays-dev").Single(o => ManifestPolicy.Name(o) == "clusterdistill-seed" && (string?)o["kind"] == "StatefulSet");
        Assert.Equal("3", ManifestPolicy.Get(seed, "spec", "replicas")?.ToString());
        var env = ManifestPolicy.List(ManifestPolicy.List(ManifestPolicy.PodSpec(seed)!, "containers").Single(), "env");
        Assert.Contains(env, e => ManifestPolicy.Get(e, "name") as string == "CLUSTERDISTILL_DISCOVERY" && ManifestPolicy.Get(e, "value") as string == "kubernetes");
        var role = rendered.Objects("overlays-dev").Single(o => (string?)o["kind"] == "Role");
        var rule = ManifestPolicy.List(role, "rules").Single();
        Assert.Equal(["pods"], ManifestPolicy.Strings(rule, "resources"));
        Assert.Equal(["get", "list", "watch"], ManifestPolicy.Strings(rule, "verbs").Order());

        // the submit Job names its run after itself (a retried pod follows that run, it does not submit
        // another), and takes the namespace it is applied in
        var job = rendered.Objects("jobs").Single(o => (string?)o["kind"] == "Job");
        Assert.Null(ManifestPolicy.Get(job, "metadata", "namespace"));
        var submit = ManifestPolicy.List(ManifestPolicy.PodSpec(job)!, "containers").Single();
        var args = ManifestPolicy.Strings(submit, "args");
        Assert.Equal("job-$(JOB_UID)", args[args.IndexOf("--run-id") + 1]);
        Assert.Contains(ManifestPolicy.List(submit, "env"), e => ManifestPolicy.Get(e, "name") as string == "JOB_UID"
            && ManifestPolicy.Get(e, "valueFrom", "fieldRef", "fieldPath") as string == "metadata.labels['batch.kubernetes.io/controller-uid']");
    }

    /// <summary>
    /// make-secrets.sh against a kubectl that keeps Secrets as folders: the first run makes all three,
    /// a second (the documented token rotation) makes a new token and keeps the in-cluster journal's
    /// password (its PostgreSQL read it once) and the TLS Secret (a new CA would split the cluster).
    /// </summary>
    [Fact]
    public void The_secrets_script_makes_each_secret_and_a_second_run_rotates_the_token_alone()
    {
        var work = Path.Combine(Path.GetTempPath(), $"cd-secrets-{Guid.NewGuid():N}");
        var bin = Path.Combine(work, "bin");
        var store = Path.Combine(work, "secrets");
        Directory.CreateDirectory(bin);
        Directory.CreateDirectory(store);
        var kubectl = Path.Combine(bin, "kubectl");
        File.WriteAllText(kubectl, $$"""
            #!/usr/bin/env bash
            # kubectl as make-secrets.sh uses it, with Secrets kept as folders under {{store}}
            set -e
            [ "$1" = -n ] && shift 2
            case "$1 $2" in
              "get namespace"|"create namespace") exit 0 ;;
              "get secret") [ -d "{{store}}/$3" ]; exit ;;
              "apply -f") cat >/dev/null; exit 0 ;;
              "create secret")
                name=$4; shift 4; rm -rf "{{store}}/$name"; mkdir -p "{{store}}/$name"
                for a in "$@"; do case "$a" in --from-file=*=*) f=${a#--from-file=}; cp "${f#*=}" "{{store}}/$name/${f%%=*}" ;;
                                               --from-file=*) f=${a#--from-file=}; cp "$f" "{{store}}/$name/$(basename "$f")" ;; esac; done
                echo "kind: Secret" ;;
              *) echo "unexpected kubectl $*" >&2; exit 3 ;;
            esac
            """.Replace("\r", ""));
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(kubectl, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        try
        {
            string Run()
            {
                var psi = new ProcessStartInfo("bash", [Path.Combine(Repo.Root(), "deploy", "k8s", "make-secrets.sh"), "ns", "in-cluster"])
                    { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = work };
                psi.Environment["PATH"] = bin + ":" + Environment.GetEnvironmentVariable("PATH");
                using var p = Process.Start(psi)!;
                var err = p.StandardError.ReadToEndAsync();
                var output = p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                Assert.True(p.ExitCode == 0, $"make-secrets.sh exit {p.ExitCode}: {output}{err.Result}");
                return output;
            }
            string Read(string secret, string key) => File.ReadAllText(Path.Combine(store, secret, key));

            Run();
            Assert.StartsWith("postgres:Host=clusterdistill-postgres;Username=clusterdistill;Password=" + Read("clusterdistill-db", "password"), Read("clusterdistill-db", "journal"));
            Assert.Equal(64, Read("clusterdistill-api-token", "token").Length);
            Assert.Contains("BEGIN CERTIFICATE", Read("clusterdistill-tls", "ca.crt"));
            var (password, token, ca, cert) = (Read("clusterdistill-db", "password"), Read("clusterdistill-api-token", "token"), Read("clusterdistill-tls", "ca.crt"), Read("clusterdistill-tls", "tls.crt"));

            var second = Run();
            Assert.NotEqual(token, Read("clusterdistill-api-token", "token"));
            Assert.Equal(password, Read("clusterdistill-db", "password"));
            Assert.Equal((ca, cert), (Read("clusterdistill-tls", "ca.crt"), Read("clusterdistill-tls", "tls.crt")));
            Assert.Contains("clusterdistill-db kept", second);
            Assert.Contains("clusterdistill-tls kept", second);
        }
        finally { Directory.Delete(work, recursive: true); }
    }

    [Fact]
    public void The_policy_names_what_a_workload_lacks()
    {
        Assert.True(rendered.ExitCode == 0, rendered.Output);
        var objects = rendered.Objects("overlays-dev");
        var node = objects.Single(o => (string?)o["kind"] == "Deployment");
        var container = ManifestPolicy.List(ManifestPolicy.PodSpec(node)!, "containers").Single();
        container.Remove("readinessProbe");
        ((Dictionary<object, object?>)container["securityContext"]!)["readOnlyRootFilesystem"] = false;
        ((List<object?>)container["args"]!).Add("--db=postgres:Host=x;Password=hunter2");
        var seed = objects.Single(o => (string?)o["kind"] == "StatefulSet" && ManifestPolicy.Name(o) == "clusterdistill-seed");
        ManifestPolicy.List(ManifestPolicy.PodSpec(seed)!, "containers").Single().Remove("resources");
        ((List<object?>)container["env"]!).RemoveAll(e => ManifestPolicy.Get(e, "name") as string == "CLUSTERDISTILL_TLS_DIR");
        objects.RemoveAll(o => (string?)o["kind"] == "NetworkPolicy" && ManifestPolicy.Name(o) == "clusterdistill-postgres");
        objects.RemoveAll(o => (string?)o["kind"] == "PodDisruptionBudget" && ManifestPolicy.Name(o) == "clusterdistill-seed");
        var postgresBudget = objects.Single(o => (string?)o["kind"] == "PodDisruptionBudget" && ManifestPolicy.Name(o) == "clusterdistill-postgres");
        ((Dictionary<object, object?>)postgresBudget["spec"]!)["maxUnavailable"] = "0";
        ((Dictionary<object, object?>)((Dictionary<object, object?>)container["resources"]!)["limits"]!)["nvidia.com/gpu"] = "1";
        ((Dictionary<object, object?>)((Dictionary<object, object?>)((Dictionary<object, object?>)node["spec"]!)["strategy"]!)["rollingUpdate"]!)["maxSurge"] = "1";

        var problems = ManifestPolicy.Problems(objects);
        Assert.Contains("Deployment/clusterdistill-node: container node has no readinessProbe", problems);
        Assert.Contains("Deployment/clusterdistill-node: container node's root filesystem is writable", problems);
        Assert.Contains("Deployment/clusterdistill-node: container node has a password on its command line", problems);
        Assert.Contains("Deployment/clusterdistill-node: container node runs without TLS", problems);
        Assert.Contains("StatefulSet/clusterdistill-seed: container seed has no resources.requests.cpu", problems);
        Assert.Contains("StatefulSet/clusterdistill-postgres: no NetworkPolicy selects its pods", problems);
        Assert.Contains("StatefulSet/clusterdistill-seed: no PodDisruptionBudget selects its pods", problems);
        Assert.Contains("PodDisruptionBudget/clusterdistill-postgres: it allows no disruption, so no node it runs on can be drained", problems);
        Assert.Contains("Deployment/clusterdistill-node: its rolling update surges, and a pool whose GPUs are all taken has none for the new pod", problems);
    }
}

/// <summary>What every workload in the manifests must have; problems as lines that name the object.</summary>
public static class ManifestPolicy
{
    private static readonly string[] Workloads = ["Deployment", "StatefulSet", "DaemonSet", "Job"];

    public static List<string> Problems(IReadOnlyList<Dictionary<string, object?>> objects)
    {
        var problems = new List<string>();
        var policies = objects.Where(o => (string?)o["kind"] == "NetworkPolicy").Select(o => MatchLabels(Get(o, "spec", "podSelector"))).ToList();
        var budgets = objects.Where(o => (string?)o["kind"] == "PodDisruptionBudget").Select(o => MatchLabels(Get(o, "spec", "selector"))).ToList();
        foreach (var o in objects)
        {
            var id = $"{o["kind"]}/{Name(o)}";
            foreach (var label in new[] { "app.kubernetes.io/name", "app.kubernetes.io/part-of" })
                if (Get(o, "metadata", "labels", label) is null) problems.Add($"{id}: no {label} label");
            // a budget that allows no pod to leave blocks every `kubectl drain` of its node for good
            if ((string?)o["kind"] == "PodDisruptionBudget" && Get(o, "spec", "maxUnavailable")?.ToString() is "0" or "0%")
                problems.Add($"{id}: it allows no disruption, so no node it runs on can be drained");
            if (!Workloads.Contains(o["kind"] as string)) continue;
            var pod = PodSpec(o)!;
            // a surge pod asks for a GPU the pool may not have free: the rollout would wait for it forever
            if ((string?)o["kind"] == "Deployment" && List(pod, "containers").Any(c => Get(c, "resources", "limits", "nvidia.com/gpu") is not null)
                && Get(o, "spec", "strategy", "rollingUpdate", "maxSurge")?.ToString() is not ("0" or "0%"))
                problems.Add($"{id}: its rolling update surges, and a pool whose GPUs are all taken has none for the new pod");
            var podLabels = Labels(Get(o, "spec", "template", "metadata", "labels"));
            if (Get(pod, "securityContext", "runAsNonRoot") is not "true" and not true) problems.Add($"{id}: the pod may run as root");
            if (!policies.Any(sel => sel.Count > 0 && sel.All(kv => podLabels.TryGetValue(kv.Key, out var v) && v == kv.Value)))
                problems.Add($"{id}: no NetworkPolicy selects its pods");
            if ((string?)o["kind"] != "Job" && !budgets.Any(sel => sel.Count > 0 && sel.All(kv => podLabels.TryGetValue(kv.Key, out var v) && v == kv.Value)))
                problems.Add($"{id}: no PodDisruptionBudget selects its pods");
            if (podLabels.GetValueOrDefault("app.kubernetes.io/name") == "clusterdistill" && Get(o, "spec", "template", "metadata", "annotations", "prometheus.io/scrape") as string != "true")
                problems.Add($"{id}: Prometheus does not scrape its pods");
            foreach (var (c, init) in List(pod, "containers").Select(c => (c, false)).Concat(List(pod, "initContainers").Select(c => (c, true))))
            {
                var name = $"container {Get(c, "name")}";
                foreach (var r in new[] { "requests.cpu", "requests.memory", "limits.memory" })
                    if (Get(c, ["resources", .. r.Split('.')]) is null) problems.Add($"{id}: {name} has no resources.{r}");
                if (Get(c, "securityContext", "readOnlyRootFilesystem") is not "true" and not true) problems.Add($"{id}: {name}'s root filesystem is writable");
                if (Get(c, "securityContext", "allowPrivilegeEscalation") is not "false" and not false) problems.Add($"{id}: {name} may escalate privileges");
                if (!Strings(c, "securityContext", "capabilities", "drop").Contains("ALL")) problems.Add($"{id}: {name} keeps its capabilities");
                var line = string.Join(" ", Strings(c, "command").Concat(Strings(c, "args")).Concat(List(c, "env").Select(e => Get(e, "value") as string ?? "")));
                if (line.Contains("Password=", StringComparison.OrdinalIgnoreCase) || line.Contains("--token ", StringComparison.Ordinal))
                    problems.Add($"{id}: {name} has a password on its command line");
                if (init || (string?)o["kind"] == "Job") continue;
                // the nodes of the cluster speak TLS to each other: the overlays turn it on
                if (podLabels.GetValueOrDefault("app.kubernetes.io/name") == "clusterdistill" &&
                    !List(c, "env").Any(e => Get(e, "name") as string == "CLUSTERDISTILL_TLS_DIR"))
                    problems.Add($"{id}: {name} runs without TLS");
                foreach (var probe in new[] { "startupProbe", "livenessProbe", "readinessProbe" })
                    if (Get(c, probe) is null) problems.Add($"{id}: {name} has no {probe}");
                if ((Get(c, "image") as string)?.StartsWith("clusterdistill", StringComparison.Ordinal) == true)
                {
                    if (Get(c, "readinessProbe", "httpGet", "path") is { } ready && ready as string != "/health/ready") problems.Add($"{id}: {name}'s readiness is not /health/ready");
                    if (Get(c, "livenessProbe", "httpGet", "path") is { } live && live as string != "/health/live") problems.Add($"{id}: {name}'s liveness is not /health/live");
                }
            }
        }
        return problems;
    }

    public static string? Name(Dictionary<string, object?> o) => Get(o, "metadata", "name") as string;

    public static Dictionary<object, object?>? PodSpec(Dictionary<string, object?> o) => Get(o, "spec", "template", "spec") as Dictionary<object, object?>;

    public static object? Get(object? node, params string[] path)
    {
        foreach (var key in path)
            node = node switch
            {
                Dictionary<string, object?> d => d.GetValueOrDefault(key),
                Dictionary<object, object?> d => d.GetValueOrDefault(key),
                _ => null,
            };
        return node;
    }

    public static List<Dictionary<object, object?>> List(object? node, params string[] path) =>
        (Get(node, path) as List<object?>)?.OfType<Dictionary<object, object?>>().ToList() ?? [];

    public static List<string> Strings(object? node, params string[] path) =>
        (Get(node, path) as List<object?>)?.Select(x => x?.ToString() ?? "").ToList() ?? [];

    private static Dictionary<string, string> MatchLabels(object? selector) => Labels(Get(selector, "matchLabels"));

    private static Dictionary<string, string> Labels(object? labels) =>
        (labels as Dictionary<object, object?>)?.ToDictionary(kv => (string)kv.Key, kv => kv.Value?.ToString() ?? "") ?? [];
}
