using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Cluster.Tests.Cluster;

/// <summary>
/// Akka.Remote and the data plane over mutually authenticated TLS between real processes: a seed, a
/// generator node and a student node with certificates of one authority train a run whose batches
/// cross the TLS data plane; a node with a certificate of another authority, and one without TLS,
/// never join.
/// </summary>
[Collection(ProcessLanes.B)]
public sealed class TlsProcessTests
{
    [Fact]
    public async Task Nodes_with_the_clusters_certificates_train_over_tls_and_nodes_without_them_cannot_join()
    {
        Torch.Init();
        using var certificates = new TestCertificates();
        using var cluster = new ProcessCluster("tls");
        var teacher = cluster.SaveTeacher(23);
        var spec = Path.Combine(cluster.Work, "tls.yaml");
        File.WriteAllText(spec, ProcessCluster.TinyDafl("tls", 9, teacher, 60, 60));
        var port = TestPorts.Block(5);
        var seeds = $"127.0.0.1:{port}";
        cluster.Start(cluster.SeedBin, "seed.log", ["serve", "--port", port.ToString(), "--http-port", cluster.HttpPort.ToString(), "--tls", certificates.Node("a"), .. cluster.Common]);
        cluster.Start(cluster.GpuBin, "gen.log", ["join", "--seeds", seeds, "--port", (port + 1).ToString(), "--hosts", "generator,teacher", "--tls", certificates.Node("b"), .. cluster.Common]);
        cluster.Start(cluster.GpuBin, "student.log", ["join", "--seeds", seeds, "--port", (port + 2).ToString(), "--hosts", "student", "--tls", certificates.Node("c"), .. cluster.Common]);
        cluster.WaitUntilUp(DateTime.UtcNow.AddMinutes(2), "gen.log", "student.log");

        // two nodes that are not the cluster's: another authority's certificate, and no TLS at all
        var stranger = cluster.Start(cluster.GpuBin, "stranger.log", ["join", "--seeds", seeds, "--port", (port + 3).ToString(), "--tls", certificates.Stranger, .. cluster.Common]);
        var plain = cluster.Start(cluster.GpuBin, "plain.log", ["join", "--seeds", seeds, "--port", (port + 4).ToString(), .. cluster.Common]);

        var submit = cluster.Start(cluster.SeedBin, "submit.log", ["submit", spec, "--server", cluster.Server, "--run-id", "t1", "--follow"]);
        Assert.True(ProcessCluster.Ended(submit, TimeSpan.FromMinutes(4)), "the run over TLS did not finish: " + cluster.Logs(_ => true, 20));
        submit.WaitForExit();
        Assert.True(submit.ExitCode == 0, "submit --follow failed: " + cluster.Logs(_ => true, 20));

        // the generator's batches went to the student node over the TLS data plane
        long Sent(string log) => Regex.Matches(cluster.Log(log), @"data plane \S+: sent (\d+), received \d+ messages; (\d+) went through Akka")
            .Select(m => long.Parse(m.Groups[1].Value)).DefaultIfEmpty(0).Max();
        for (var wait = DateTime.UtcNow.AddSeconds(15); Sent("gen.log") == 0 && DateTime.UtcNow < wait;) Thread.Sleep(500);
        Assert.True(Sent("gen.log") > 0, "the generator sent nothing over the data plane: " + cluster.Logs(l => l.Contains("data plane"), 10));
        Assert.DoesNotContain("did not authenticate", cluster.Log("gen.log") + cluster.Log("student.log"));

        // by now (a minute and more) the strangers have tried: neither is a member, neither came up
        using var http = new HttpClient { BaseAddress = new Uri(cluster.Server) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", cluster.Token);
        using var nodes = JsonDocument.Parse(await http.GetStringAsync("/api/nodes"));
        var members = nodes.RootElement.EnumerateArray().Select(n => n.GetProperty("address").GetString()).ToList();
        Assert.Equal(3, members.Count);
        Assert.DoesNotContain($"127.0.0.1:{port + 3}", members);
        Assert.DoesNotContain($"127.0.0.1:{port + 4}", members);
        Assert.DoesNotContain("[gpu-node] up at", cluster.Log("stranger.log"));
        Assert.DoesNotContain("[gpu-node] up at", cluster.Log("plain.log"));
        // the seed refused both in the handshake, and said so: plain TCP is no TLS record at all,
        // and the stranger's certificate and the seed's are each refused by the other side
        Assert.Contains("TLS handshake failed (Server side)", cluster.Log("seed.log"));
        Assert.Contains("not an SSL/TLS record", cluster.Log("seed.log"));
        Assert.Contains("TLS handshake failed", cluster.Log("stranger.log"));
        stranger.Kill();
        plain.Kill();
    }
}
