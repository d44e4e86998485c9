using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Playwright;

namespace Cluster.Tests.Cluster;

/// <summary>
/// The dashboard in a real browser: Debian's Chromium (scripts/chromium.sh), driven headless by
/// Playwright for .NET, against a real seed and GPU node running a real DAFL run and a small KD
/// sweep. It checks what the pages show (numbers, curves drawn, sample grids loaded, live updates,
/// a phone-sized screen) and that the console has no errors, and saves screenshots under the test
/// output (screenshots/).
/// </summary>
[Collection(ProcessLanes.A)]
public sealed class DashboardBrowserTests
{
    private static string Browser() =>
        Environment.GetEnvironmentVariable("CLUSTERDISTILL_CHROMIUM") is { Length: > 0 } b ? b
        : File.Exists("/usr/bin/chromium") ? "/usr/bin/chromium"
        : throw new InvalidOperationException("no Chromium: scripts/chromium.sh installs it (scripts/test.sh runs it)");

    [Fact]
    public async Task Should_show_runs_a_run_a_sweep_and_the_cluster_live_in_a_real_browser_without_console_errors()
    {
        Torch.Init();
        using var cluster = new ProcessCluster("dash");
        var teacher = cluster.SaveTeacher(81);
        var port = TestPorts.Block(3);
        cluster.Start(cluster.SeedBin, "seed.log", ["serve", "--port", port.ToString(), "--http-port", cluster.HttpPort.ToString(), .. cluster.Common]);
        cluster.Start(cluster.GpuBin, "gpu.log", ["join", "--seeds", $"127.0.0.1:{port}", "--port", (port + 1).ToString(), "--slots", "2", .. cluster.Common]);
        cluster.WaitUntilUp(DateTime.UtcNow.AddMinutes(2), "gpu.log");
        using var http = new HttpClient { BaseAddress = new Uri(cluster.Server), Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", cluster.Token);

        var shots = Path.Combine(AppContext.BaseDirectory, "screenshots");
        Directory.CreateDirectory(shots);
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = Browser(), Headless = true, Args = ["--no-sandbox"] });
        var problems = new List<string>();
        async Task<IPage> Open(int width, int height)
        {
            var context = await browser.NewContextAsync(new() { ViewportSize = new() { Width = width, Height = height } });
            var page = await context.NewPageAsync();
            page.Console += (_, m) => { if (m.Type is "error" or "warning") lock (problems) problems.Add($"console {m.Type}: {m.Text}"); };
            page.PageError += (_, e) => { lock (problems) problems.Add("page error: " + e); };
            page.RequestFailed += (_, r) => { if (!r.Url.Contains("/api/stream")) lock (problems) problems.Add($"request failed: {r.Url} {r.Failure}"); };
            return page;
        }

        // a DAFL run long enough to watch (sample grids at steps 100, 200, 300), and a 3-trial KD sweep
        var yaml = ProcessCluster.TinyDafl("dash", 9, teacher, 300, 100, "{checkpoint_every: 50}");
        using (var r = await http.PostAsync("/api/runs?runId=d1", new StringContent(yaml, Encoding.UTF8, "application/yaml"))) Assert.Equal(System.Net.HttpStatusCode.Created, r.StatusCode);
        var page = await Open(1280, 900);
        await page.GotoAsync($"{cluster.Server}/#token={cluster.Token}");
        Assert.DoesNotContain(cluster.Token, page.Url);   // the token leaves the address bar
        var row = page.Locator("#runs tbody tr[data-run='d1']");
        await row.WaitForAsync(new() { Timeout = 60_000 });
        await Expect(row, "dafl");

        // the run's page follows the run without a reload
        await page.GotoAsync($"{cluster.Server}/#/run/d1");
        await page.Locator("#cards").WaitForAsync();
        var seen = new HashSet<string>();
        var deadline = DateTime.UtcNow.AddMinutes(4);
        var killed = false;
        while (true)
        {
            var step = await page.Locator("#cards .card").First.Locator(".v").InnerTextAsync();
            seen.Add(step);
            if (!killed && int.Parse(step.Split('/')[0]) >= 120)
            {
                // kill -9 the GPU node mid-run and start another: the student comes back from its checkpoint
                killed = true;
                cluster.Processes[1].Kill(entireProcessTree: true);
                cluster.Processes[1].WaitForExit();
                cluster.Start(cluster.GpuBin, "gpu-2.log", ["join", "--seeds", $"127.0.0.1:{port}", "--port", (port + 2).ToString(), "--slots", "2", .. cluster.Common]);
            }
            if (step == "300/300" && (await page.Locator("h1 .badge").InnerTextAsync()) == "completed") break;
            Assert.True(DateTime.UtcNow < deadline, "the run page did not reach 300/300, completed; it showed " + string.Join(", ", seen) + "\n" + cluster.Logs(_ => true, 20));
            await Task.Delay(200);
        }
        Assert.True(seen.Count >= 3, "the run page showed too few steps while the run trained: " + string.Join(", ", seen));
        await page.Locator("#samples img").Nth(2).WaitForAsync();
        await page.WaitForFunctionAsync("() => [...document.querySelectorAll('#samples img')].every(i => i.complete && i.naturalWidth > 0)", null, new() { Timeout = 30_000 });
        Assert.Equal(3, await page.Locator("#samples img").CountAsync());
        // curves drawn from the metrics: accuracy at the three evaluations, and the losses of every logged step
        await page.WaitForFunctionAsync("() => document.querySelectorAll('#c-acc path.series').length > 0", null, new() { Timeout = 30_000 });
        Assert.Equal("3", await page.Locator("#c-acc path.series").First.GetAttributeAsync("data-points"));
        Assert.True(int.Parse((await page.Locator("#c-loss path.series").First.GetAttributeAsync("data-points"))!) >= 10);
        Assert.True(await page.Locator("#c-source path.series").CountAsync() > 0);
        Assert.Contains("accepted", await page.Locator("#events").InnerTextAsync());
        // the failover is in the events and marked on the curves at the step the student came back from
        Assert.Contains("resumed at step", await page.Locator("#events tr.failover").First.InnerTextAsync());
        Assert.True(await page.Locator("#c-loss line.marker.failover").CountAsync() > 0, "no failover marker on the loss curve");
        await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "run.png"), FullPage = true });

        // the sweep: every trial's curve, and the metric against its hyperparameter
        File.WriteAllText(Path.Combine(cluster.Work, "sweep.yaml"), $$"""
            name: dash-sweep
            seed: 0
            base:
              name: dash-kd
              method: kd
              seed: 1
              data: {name: mnist, image_size: 32}
              teacher: {arch: lenet5, checkpoint: {{teacher}}}
              student:
                arch: lenet5-half
                train: {steps: 60, batch_size: 64, optimizer: adam, lr: 0.001, eval_every: 20}
              kd: {temperature: 4, alpha: 0.1}
            space:
              kd.alpha: {grid: [0.1, 0.5, 0.9]}
            search: {kind: grid}
            scheduler: {kind: fifo}
            limits: {max_concurrent: 2}
            """);
        string sweepId;
        using (var r = await http.PostAsync("/api/sweeps?sweepId=s1&specFile=" + Uri.EscapeDataString(Path.Combine(cluster.Work, "sweep.yaml")),
                   new StringContent(File.ReadAllText(Path.Combine(cluster.Work, "sweep.yaml")), Encoding.UTF8, "application/yaml")))
        {
            Assert.True(r.IsSuccessStatusCode, await r.Content.ReadAsStringAsync());
            using var doc = JsonDocument.Parse(await r.Content.ReadAsStringAsync());
            sweepId = doc.RootElement.GetProperty("id").GetString()!;
        }
        await page.GotoAsync($"{cluster.Server}/#/sweeps");
        await page.Locator($"#sweeps tbody tr").First.WaitForAsync();
        await page.GotoAsync($"{cluster.Server}/#/sweep/{sweepId}");
        deadline = DateTime.UtcNow.AddMinutes(4);
        while ((await page.Locator("h1 .badge").CountAsync()) == 0 || await page.Locator("h1 .badge").InnerTextAsync() != "completed")
        {
            Assert.True(DateTime.UtcNow < deadline, "the sweep did not complete: " + cluster.Logs(_ => true, 20));
            await Task.Delay(500);
        }
        await page.WaitForFunctionAsync("() => document.querySelectorAll('#c-trials path.series').length === 3 && document.querySelectorAll('#c-hp0 circle.point').length === 3", null, new() { Timeout = 30_000 });
        Assert.Equal(3, await page.Locator("#trials tbody tr").CountAsync());
        foreach (var path in await page.Locator("#c-trials path.series").AllAsync())
            Assert.Equal("3", await path.GetAttributeAsync("data-points"));   // each trial evaluated at steps 20, 40, 60
        await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "sweep.png"), FullPage = true });

        // the cluster: both nodes, their roles and slots
        await page.GotoAsync($"{cluster.Server}/#/cluster");
        await page.Locator("#nodes tbody tr").Nth(1).WaitForAsync();
        var nodes = await page.Locator("#nodes tbody").InnerTextAsync();
        Assert.Contains("seed", nodes);
        Assert.Contains("gpu", nodes);
        await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "cluster.png"), FullPage = true });

        // a phone: the pages fit its width (wide tables scroll inside their box)
        var phone = await Open(390, 844);
        await phone.GotoAsync($"{cluster.Server}/#token={cluster.Token}");
        await phone.Locator("#runs tbody tr").First.WaitForAsync();
        foreach (var view in new[] { "#/runs", "#/run/d1", $"#/sweep/{sweepId}", "#/cluster" })
        {
            await phone.GotoAsync($"{cluster.Server}/{view}");
            await phone.Locator("main h1").WaitForAsync();
            await Task.Delay(500);
            var width = await phone.EvaluateAsync<int>("() => document.documentElement.scrollWidth");
            Assert.True(width <= 390, $"{view} is {width} px wide on a 390 px screen");
        }
        await phone.GotoAsync($"{cluster.Server}/#/run/d1");
        await phone.Locator("#samples img").First.WaitForAsync();
        await phone.ScreenshotAsync(new() { Path = Path.Combine(shots, "phone-run.png"), FullPage = true });

        lock (problems) Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    private static async Task Expect(ILocator row, string method)
    {
        var text = await row.InnerTextAsync();
        Assert.Contains(method, text);
        Assert.Matches(@"\d+/300", text);
    }
}
