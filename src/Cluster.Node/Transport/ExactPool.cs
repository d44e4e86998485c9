using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

namespace Cluster.Node.Transport;

/// <summary>
/// Arrays of exactly the length asked for, reused: the gradient chunks' bytes and the all-reduce's
/// sums. A fresh megabyte array costs about five times its copy on these machines (the GC maps and
/// faults in new pages; docs/benchmarks.md), and the replicas move one gradient's worth of them
/// each way every step. <see cref="ArrayPool{T}"/> hands out power-of-two lengths, and a tensor
/// payload's bytes must match its shape exactly, hence this. Rent gives an array whose contents are
/// undefined; Return takes one that nothing else refers to any more (what would take the pool
/// over its limit is left to the GC).
/// </summary>
/// <param name="maxBytes">At most this many bytes of arrays waiting to be reused.</param>
public sealed class ExactPool<T>(long maxBytes = ExactPool<T>.DefaultMaxBytes) where T : unmanaged
{
    public const long DefaultMaxBytes = 512L << 20;

    public static readonly ExactPool<T> Shared = new();

    private readonly ConcurrentDictionary<int, ConcurrentBag<T[]>> byLength = new();
    private long pooledBytes;

    public long PooledBytes => Interlocked.Read(ref pooledBytes);

    public T[] Rent(int length)
    {
        if (length > 0 && byLength.TryGetValue(length, out var bag) && bag.TryTake(out var array))
        {
            Interlocked.Add(ref pooledBytes, -Bytes(length));
            return array;
        }
        return GC.AllocateUninitializedArray<T>(length);
    }

    public void Return(T[] array)
    {
        if (array.Length == 0) return;
        if (Interlocked.Add(ref pooledBytes, Bytes(array.Length)) > maxBytes)
        {
            Interlocked.Add(ref pooledBytes, -Bytes(array.Length));
            return;
        }
        byLength.GetOrAdd(array.Length, _ => []).Add(array);
    }

    private static long Bytes(int length) => (long)length * Unsafe.SizeOf<T>();
}
