using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace Cluster.Tests.Cluster;

/// <summary>
/// Cluster formation without a static seed list (Akka.Management's Cluster.Bootstrap, config
/// discovery on 127.0.0.1): three seed-capable processes form one cluster and a GPU node joins it;
/// the oldest seed, which holds the coordinator singleton, is killed mid-run and the run completes
/// under the singleton's new home; the killed seed rejoins; and when every seed is restarted at
/// once, the GPU node leaves the old cluster for the new one.
/// </summary>
[Collection(ProcessLanes.A)]
public sealed class BootstrapProcessTests
{
    [Fact]
    public async Task Three_seeds_form_one_cluster_from_discovery_survive_the_oldest_dying_and_take_it_back()
    {
        using var cluster = new ProcessCluster("bootstrap");
        var ports = TestPorts.Block(9);
        int Akka(int i) => ports + i;
        int Management(int i) => ports + 3 + i;
        int Http(int i) => ports + 6 + i;
        var discovery = "config:" + string.Join(",", Enumerable.Range(0, 3).Select(i => $"127.0.0.1:{Management(i)}"));
        var gpuManagement = TestPorts.Block(1);
        var seeds = new Process?[3];
        void StartSeed(int i, string log) => seeds[i] = cluster.Start(cluster.SeedBin, log, ["serve", "--port", Akka(i).ToString(), "--discovery", discovery,
            "--management-port", Management(i).ToString(), "--http-port", Http(i).ToString(), .. cluster.Common]);
        for (var i = 0; i < 3; i++) StartSeed(i, $"seed{i}.log");
        var gpu = cluster.Start(cluster.GpuBin, "gpu.log", ["join", "--port", "0", "--discovery", discovery, "--management-port", gpuManagement.ToString(), .. cluster.Common]);

        var clients = Enumerable.Range(0, 3).Select(i => new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{Http(i)}"), Timeout = TimeSpan.FromSeconds(10) }).ToArray();
        foreach (var c in clients) c.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", cluster.Token);

        // one cluster: every seed sees the same four members up
        var expected = Enumerable.Range(0, 3).Select(i => $"127.0.0.1:{Akka(i)}").ToList();
        var members = await OneCluster(clients, 4, TimeSpan.FromMinutes(2), cluster);
        Assert.True(expected.All(members.Contains), string.Join(", ", members));

        // the coordinator singleton is on the oldest seed: the one that formed the cluster (lowest contact point)
        var oldest = Enumerable.Range(0, 3).Single(i => cluster.Log($"seed{i}.log").Contains("run coordinator up"));
        Assert.Equal(0, oldest);
        var spec = """
            name: bootstrap
            method: supervised
            seed: 5
            data: {name: mnist, image_size: 32, train_limit: 16000}
            student:
              arch: lenet5
              train: {epochs: 1, batch_size: 32, optimizer: adam, lr: 0.002, eval_every: 100}
            """;
        using (var submitted = await clients[1].PostAsync("/api/runs?runId=b1", new StringContent(spec, Encoding.UTF8, "application/yaml")))
            Assert.Equal(System.Net.HttpStatusCode.Created, submitted.StatusCode);
        await Until(async () => (await Run(clients[1])).Step >= 100, TimeSpan.FromMinutes(2), "the run did not reach step 100", cluster);

        seeds[oldest]!.Kill();
        seeds[oldest]!.WaitForExit();
        var survivors = clients.Where((_, i) => i != oldest).ToArray();
        // the run completes under the coordinator's new home, with every step trained once
        await Until(async () => (await Run(survivors[0])).State == "completed", TimeSpan.FromMinutes(3), "the run did not complete after the oldest seed died", cluster);
        Assert.Single(Enumerable.Range(0, 3).Where(i => i != oldest), i => cluster.Log($"seed{i}.log").Contains("run coordinator up: 1 runs, 1 unfinished"));
        var result = JsonDocument.Parse(await survivors[0].GetStringAsync("/api/runs/b1/result")).RootElement;
        Assert.Equal(500, result.GetProperty("steps").GetInt64());
        Assert.InRange(result.GetProperty("student_accuracy").GetDouble(), 80, 100);
        members = await OneCluster(survivors, 3, TimeSpan.FromMinutes(1), cluster);
        Assert.DoesNotContain($"127.0.0.1:{Akka(oldest)}", members);
        Assert.False(gpu.HasExited);

        // the killed seed comes back into the same cluster, not a new one of its own
        StartSeed(oldest, $"seed{oldest}-again.log");
        members = await OneCluster(clients, 4, TimeSpan.FromMinutes(2), cluster);
        Assert.True(expected.All(members.Contains), string.Join(", ", members));
        Assert.DoesNotContain("run coordinator up", cluster.Log($"seed{oldest}-again.log"));

        // every seed restarted at once: they form a new cluster, and the GPU node joins it without a
        // restart of its process: downed as the minority by the split-brain resolver, or, were it
        // the majority, leaving once a contact point is in a cluster without it (SeedWatch)
        for (var i = 0; i < 3; i++) { seeds[i]!.Kill(); seeds[i]!.WaitForExit(); }
        for (var i = 0; i < 3; i++) StartSeed(i, $"seed{i}-new.log");
        members = await OneCluster(clients, 4, TimeSpan.FromMinutes(3), cluster);
        Assert.Matches("this node was removed from the cluster: joining again|the seeds formed a new cluster: joining it", cluster.Log("gpu.log"));
        Assert.False(gpu.HasExited);
    }

    private static async Task<(string State, long Step)> Run(HttpClient c)
    {
        try
        {
            using var doc = JsonDocument.Parse(await c.GetStringAsync("/api/runs/b1"));
            return (doc.RootElement.GetProperty("state").GetString()!, doc.RootElement.GetProperty("studentStep").GetInt64());
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { return ("", 0); }
    }

    /// <summary>Until every client's /api/nodes lists the same members, all up and reachable, this many of them.</summary>
    private static async Task<List<string>> OneCluster(HttpClient[] clients, int count, TimeSpan within, ProcessCluster cluster)
    {
        List<string>? seen = null;
        await Until(async () =>
        {
            var views = new List<List<string>>();
            foreach (var c in clients)
            {
                try
                {
                    using var doc = JsonDocument.Parse(await c.GetStringAsync("/api/nodes"));
                    views.Add(doc.RootElement.EnumerateArray()
                        .Where(n => n.GetProperty("status").GetString() == "up" && n.GetProperty("reachable").GetBoolean())
                        .Select(n => n.GetProperty("address").GetString()!).Order().ToList());
                    if (doc.RootElement.GetArrayLength() != views[^1].Count) return false;
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { return false; }
            }
            seen = views[0];
            return views.All(v => v.Count == count && v.SequenceEqual(views[0]));
        }, within, $"not one cluster of {count}", cluster);
        return seen!;
    }

    private static async Task Until(Func<Task<bool>> condition, TimeSpan within, string what, ProcessCluster cluster)
    {
        var deadline = DateTime.UtcNow + within;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, what + ": " + cluster.Logs(_ => true, 25));
            await Task.Delay(500);
        }
    }
}
