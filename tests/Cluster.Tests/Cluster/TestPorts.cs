namespace Cluster.Tests.Cluster;

/// <summary>
/// Ports for the process tests' nodes. Two process tests run at once (ProcessLanes), so each call
/// hands out a block no other test of this run holds; the range lies below Linux's ephemeral ports,
/// offset by the process id so that two test runs on one machine rarely meet.
/// </summary>
public static class TestPorts
{
    private static int next = 12000 + Environment.ProcessId % 40 * 500;

    public static int Block(int count) => Interlocked.Add(ref next, count) - count;
}
