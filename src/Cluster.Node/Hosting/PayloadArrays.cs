namespace Cluster.Node.Hosting;

/// <summary>
/// Arrays for payloads that their owner knows when nobody reads any more (a source's held batches,
/// once every student released them), to be filled again instead of allocated. A fresh half-megabyte
/// array a batch lands on memory the GC gave back to the OS after its last collection: ~130 page
/// faults (0.9 ms on the compute thread on a 2-core VM) and a full collection every ~14 batches.
/// Thread-safe: the compute thread rents, the mailbox returns.
/// </summary>
public sealed class PayloadArrays(int keepPerLength = 64)
{
    private readonly Dictionary<int, Stack<byte[]>> free = [];

    /// <summary>An array of exactly `length` bytes, contents undefined (the caller overwrites all of them).</summary>
    public byte[] Rent(int length)
    {
        lock (free)
            if (free.TryGetValue(length, out var stack) && stack.TryPop(out var a)) return a;
        return GC.AllocateUninitializedArray<byte>(length);
    }

    /// <summary>Takes back an array nothing will read again.</summary>
    public void Return(byte[] array)
    {
        lock (free)
        {
            if (!free.TryGetValue(array.Length, out var stack)) free[array.Length] = stack = new Stack<byte[]>();
            if (stack.Count < keepPerLength) stack.Push(array);
        }
    }

    public int Count
    {
        get { lock (free) return free.Values.Sum(s => s.Count); }
    }
}
