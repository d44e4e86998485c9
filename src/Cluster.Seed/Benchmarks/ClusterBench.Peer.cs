using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Akka.Actor;
using Akka.Configuration;
using Cluster.Contracts.Pipeline;
using Cluster.Contracts.Runs;
using Cluster.Contracts.Serialization;
using Cluster.Contracts.Students;
using Cluster.Contracts.Tensors;
using Cluster.Node.Actors;
using Cluster.Node.Configuration;
using Cluster.Node.Hosting;
using Cluster.Node.Security;
using Cluster.Node.Transport;
using Distill.Engine.Methods;
using Distill.Engine.Pipeline;
using Distill.Engine.Models;
using Distill.Engine.Specs;
using static TorchSharp.torch;

namespace Cluster.Seed.Benchmarks;

/// <summary>The bench's second process and its handle.</summary>
public static partial class ClusterBench
{
    /// <summary>The second process: a sink and reducers reached through Akka.Remote and the data plane, and a raw TCP sink.</summary>
    public static int RunPeer(int akkaPort, int tcpPort, string? tlsFolder, TextWriter stdout)
    {
        var tls = tlsFolder is null ? null : NodeTls.Load(tlsFolder);
        var system = NodeActorSystem.Create("bench-peer", RemoteConfig(akkaPort, tls), tls);
        var sink = system.ActorOf(Props.Create(() => new Sink()), "sink");
        DataPlane? plane = null;
        var reducer = system.ActorOf(Props.Create(() => new ReducerHost(() => plane!)), "reducer");
        plane = DataPlane.Start("127.0.0.1", 0, "127.0.0.1", ContractCodec.DefaultMaxMessageBytes,
            deliver: m => (m is LabelledBatch ? sink : reducer).Tell(m), fallback: _ => { }, warn: stdout.WriteLine, tls: tls);
        var listener = new TcpListener(IPAddress.Loopback, tcpPort);
        listener.Start();
        stdout.WriteLine($"ready {plane.Endpoint}");
        stdout.Flush();
        while (true)
        {
            using var c = listener.AcceptTcpClient();
            c.NoDelay = true;
            c.SendBufferSize = c.ReceiveBufferSize = 4 << 20;
            using var s = c.GetStream();
            var header = new byte[9];
            s.ReadExactly(header);
            var total = BitConverter.ToInt64(header);
            Task back = Task.CompletedTask;
            if (header[8] == 1)
            {
                // duplex: as many bytes back while these arrive
                back = Task.Run(() =>
                {
                    var chunk = new byte[512 * 1024];
                    for (long sent = 0; sent < total; sent += chunk.Length) s.Write(chunk, 0, (int)Math.Min(chunk.Length, total - sent));
                });
            }
            Drain(s, total);
            back.Wait();
            s.WriteByte(1);
        }
    }

    private sealed class Peer : IDisposable
    {
        private readonly Process process;
        public int AkkaPort { get; }
        /// <summary>The peer's Akka address: akka.ssl.tcp with TLS.</summary>
        public string Akka => $"{(Tls ? "akka.ssl.tcp" : "akka.tcp")}://bench-peer@127.0.0.1:{AkkaPort}";
        public bool Tls { get; init; }
        public int TcpPort { get; }
        public string DataEndpoint { get; }

        private Peer(Process p, int akka, int tcp, string data) { process = p; AkkaPort = akka; TcpPort = tcp; DataEndpoint = data; }

        public static Peer Start(TextWriter log, string? tls)
        {
            int Free() { var l = new TcpListener(IPAddress.Loopback, 0); l.Start(); var port = ((IPEndPoint)l.LocalEndpoint).Port; l.Stop(); return port; }
            var (akka, tcp) = (Free(), Free());
            var psi = new ProcessStartInfo(Environment.ProcessPath!, ["bench-peer", "--port", akka.ToString(), "--tcp-port", tcp.ToString(), .. tls is null ? Array.Empty<string>() : ["--tls", tls]])
            { RedirectStandardOutput = true, RedirectStandardError = true };
            var p = Process.Start(psi)!;
            var line = p.StandardOutput.ReadLine();
            if (line?.StartsWith("ready ") != true) throw new InvalidOperationException($"bench peer did not start: {line} {p.StandardError.ReadToEnd()}");
            var data = line["ready ".Length..];
            log.WriteLine($"[bench] peer process {p.Id}: Akka.Remote on {akka}, raw TCP on {tcp}, data plane at {data}");
            return new Peer(p, akka, tcp, data) { Tls = tls is not null };
        }

        public void Dispose()
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            process.Dispose();
        }
    }
}
