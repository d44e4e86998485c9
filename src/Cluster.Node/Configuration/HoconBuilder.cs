using System.Globalization;
using Akka.Configuration;

namespace Cluster.Node.Configuration;

/// <summary>All of the Akka configuration, in one place.</summary>
public static class HoconBuilder
{
    // each persistence plugin's breaker (see the persistence section)
    private const string Breaker = "circuit-breaker { max-failures = 5, call-timeout = 20s, reset-timeout = 2s }";

    public static Config Build(NodeOptions o)
    {
        string Q(string s) => "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";
        string Secs(TimeSpan t) => t.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture) + "s";
        var seeds = string.Join(", ", o.Seeds.Select(s => Q($"{o.Protocol}://{o.SystemName}@{s}")));
        var roles = string.Join(", ", o.Roles.Select(Q));
        var provider = o.Persistence.LinqToDbProvider;
        var cs = Q(o.Persistence.ConnectionString);
        // frames carry a message plus Akka's envelope
        var frame = o.MaxMessageBytes + 256 * 1024;
        var hocon = $$"""
            clusterdistill.wire.max-message-bytes = {{o.MaxMessageBytes}}
            clusterdistill.log-format = {{o.LogFormat}}
            akka {
              loglevel = {{o.LogLevel}}
              stdout-loglevel = {{o.LogLevel}}
              loggers = ["Cluster.Node.Hosting.NodeLogger, Cluster.Node"]
              {{(o.LogFormat == "json" ? "stdout-logger-class = \"Cluster.Node.Hosting.JsonStdoutLogger, Cluster.Node\"" : "")}}
              # the scheduler's wheel wakes its timer and a pool thread every tick: at the default
              # 10 ms that is ~550 wakeups a second on an idle node, each preempting the compute
              # team on a small machine (docs/benchmarks.md). Nothing here schedules finer than 1 s.
              scheduler.tick-duration = 50ms
              actor {
                provider = cluster
                serialize-messages = {{(o.SerializeAllMessages ? "on" : "off")}}
                # only explicit contracts cross the wire: no fallback to a serializer for every object, and
                # Akka's Newtonsoft "json" serializer (type names chosen by the sender) replaced by one
                # that refuses, so that its id is unknown to an incoming message too
                serializers {
                  clusterdistill = "Cluster.Contracts.Serialization.ContractSerializer, Cluster.Contracts"
                  json = "Cluster.Contracts.Serialization.NoContractSerializer, Cluster.Contracts"
                }
                serialization-bindings { "Cluster.Contracts.IWireMessage, Cluster.Contracts" = clusterdistill }
                serialization-settings.allow-unregistered-types = off
              }
              remote.dot-netty.tcp {
                hostname = {{Q(o.Hostname)}}
                port = {{o.Port}}
                # Akka's default on Linux sets SO_REUSEPORT: a second node on a port in use would bind it too,
                # join with the same address and get the first downed
                tcp-reuse-addr = off
                maximum-frame-size = {{frame}}b
                send-buffer-size = {{Math.Max(frame * 2, 4 << 20)}}b
                receive-buffer-size = {{Math.Max(frame * 2, 4 << 20)}}b
                # TLS: its settings come from code alone (DotNettySslSetup, NodeActorSystem), which Akka
                # reads instead of an ssl {} section: mutual authentication, each side's chain to the
                # cluster's authority, no host names
                enable-ssl = {{(o.Tls is null ? "off" : "on")}}
                # write batching holds small messages (the credits that pace the batch stream, the
                # all-reduce's acknowledgements) for up to its 40 ms flush interval: 60 MB/s for batches
                batching.enabled = false
              }
              cluster {
                seed-nodes = [{{seeds}}]
                roles = [{{roles}}]
                downing-provider-class = "Akka.Cluster.SBR.SplitBrainResolverProvider, Akka.Cluster"
                split-brain-resolver {
                  active-strategy = keep-majority
                  stable-after = {{Secs(o.DowningStableAfter)}}
                }
                failure-detector.acceptable-heartbeat-pause = {{Secs(o.HeartbeatPause)}}
                singleton { role = {{Roles.Seed}}, hand-over-retry-interval = 1s }
                singleton-proxy {
                  role = {{Roles.Seed}}
                  buffer-size = 1000
                  # off: Akka.NET's check fires its first tick at once and warns "failed to find ... after
                  # 30 seconds" on every start, before any Identify could answer (akkadotnet/akka.net#8568);
                  # a coordinator that is really missing shows in every API answer ("did not answer")
                  log-singleton-identification-failure = off
                }
                sharding {
                  role = {{Roles.Gpu}}
                  remember-entities = on
                  remember-entities-store = eventsourced
                  state-store-mode = persistence
                  # sharding's own journal and snapshot tables, apart from the application's
                  journal-plugin-id = "akka.persistence.journal.sharding"
                  snapshot-plugin-id = "akka.persistence.snapshot-store.sharding"
                  passivate-idle-entity-after = off
                  rebalance-interval = 5s
                }
              }
              persistence {
                # every plugin's circuit breaker fails fast for 2 s only: Akka's default keeps it open
                # 30 s (journal) or 60 s (snapshots), past the database's return; the actors
                # themselves back off 1-10 s
                journal {
                  plugin = "akka.persistence.journal.sql"
                  sql {
                    class = "Akka.Persistence.Sql.Journal.SqlWriteJournal, Akka.Persistence.Sql"
                    connection-string = {{cs}}
                    provider-name = "{{provider}}"
                    auto-initialize = true
                    {{Breaker}}
                  }
                  sharding {
                    class = "Akka.Persistence.Sql.Journal.SqlWriteJournal, Akka.Persistence.Sql"
                    plugin-dispatcher = "akka.persistence.dispatchers.default-plugin-dispatcher"
                    connection-string = {{cs}}
                    provider-name = "{{provider}}"
                    auto-initialize = true
                    {{Breaker}}
                    default {
                      journal.table-name = "sharding_journal"
                      metadata.table-name = "sharding_journal_metadata"
                      tag.table-name = "sharding_tags"
                    }
                  }
                }
                snapshot-store {
                  plugin = "akka.persistence.snapshot-store.sql"
                  sql {
                    class = "Akka.Persistence.Sql.Snapshot.SqlSnapshotStore, Akka.Persistence.Sql"
                    connection-string = {{cs}}
                    provider-name = "{{provider}}"
                    auto-initialize = true
                    {{Breaker}}
                  }
                  sharding {
                    class = "Akka.Persistence.Sql.Snapshot.SqlSnapshotStore, Akka.Persistence.Sql"
                    plugin-dispatcher = "akka.persistence.dispatchers.default-plugin-dispatcher"
                    connection-string = {{cs}}
                    provider-name = "{{provider}}"
                    auto-initialize = true
                    {{Breaker}}
                    default.snapshot.table-name = "sharding_snapshot"
                  }
                }
              }
              coordinated-shutdown.exit-clr = off
            {{Bootstrap(o, Q)}}
              # a one-node (embedded) cluster has no node to hand its shards to: waiting for a hand-off
              # (10 s by default) would only delay Ctrl+C; entities' state is persisted as they go
              {{(o.Embedded ? "coordinated-shutdown.phases.cluster-sharding-shutdown-region.timeout = 2s" : "")}}
            }
            """;
        return ConfigurationFactory.ParseString(hocon);
    }

    /// <summary>Akka.Management and Cluster.Bootstrap, inside the akka block (nothing without discovery).</summary>
    private static string Bootstrap(NodeOptions o, Func<string, string> q)
    {
        if (o.Discovery is not { } d) return "";
        var discovery = d.Method == "kubernetes"
            ? $$"""
              discovery {
                method = kubernetes-api
                # the seed pods, by their labels; their container port named "management"
                kubernetes-api.pod-label-selector = {{q(d.LabelSelector)}}
              }
              """
            : $$"""
              discovery {
                method = config
                config.services.{{DiscoveryOptions.ServiceName}}.endpoints = [{{string.Join(", ", d.Endpoints.Select(q))}}]
              }
              """;
        return $$"""
              {{discovery}}
              management {
                http {
                  hostname = {{q(o.Hostname)}}
                  port = {{d.ManagementPort}}
                  bind-hostname = {{q(o.Hostname)}}
                  bind-port = {{d.ManagementPort}}
                }
                cluster.bootstrap {
                  new-cluster-enabled = {{(d.NewClusterAllowed ? "on" : "off")}}
                  contact-point-discovery {
                    service-name = {{DiscoveryOptions.ServiceName}}
                    {{(d.Method == "kubernetes" ? "port-name = management" : "")}}
                    discovery-method = akka.discovery
                    required-contact-point-nr = {{d.RequiredContactPoints}}
                    stable-margin = 3s
                    interval = 1s
                    contact-with-all-contact-points = true
                  }
                  # several contact points may share a host (processes on one machine): keep them all
                  contact-point {
                    fallback-port = {{DiscoveryOptions.DefaultManagementPort}}
                    filter-on-fallback-port = false
                    probe-interval = 1s
                  }
                }
              }
              """;
    }
}
