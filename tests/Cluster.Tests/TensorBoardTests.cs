using Distill.Engine.Runs;

namespace Cluster.Tests;

/// <summary>
/// A run directory's metrics reach TensorBoard: the event file is read back here record by record
/// (TFRecord framing: length, masked CRC-32C of the length, the Event protobuf, its masked CRC),
/// and every scalar is there with its tag, step and value.
/// </summary>
[Collection(TorchLane.Name), TorchLane]
public sealed class TensorBoardTests
{
    /// <summary>Every Event in a TensorBoard file, the CRCs checked as TensorBoard's reader does.</summary>
    public static List<Tensorboard.Event> ReadEvents(string file)
    {
        var events = new List<Tensorboard.Event>();
        using var r = new BinaryReader(File.OpenRead(file));
        while (r.BaseStream.Position < r.BaseStream.Length)
        {
            var lengthBytes = r.ReadBytes(8);
            Assert.Equal(Masked(Crc32C(lengthBytes)), r.ReadUInt32());
            var data = r.ReadBytes((int)BitConverter.ToUInt64(lengthBytes));
            Assert.Equal(Masked(Crc32C(data)), r.ReadUInt32());
            events.Add(Tensorboard.Event.Parser.ParseFrom(data));
        }
        return events;
    }

    // CRC-32C (Castagnoli), masked as TFRecord does: ((crc >> 15) | (crc << 17)) + 0xa282ead8
    private static uint Crc32C(byte[] data)
    {
        var crc = 0xFFFFFFFFu;
        foreach (var b in data)
        {
            crc ^= b;
            for (var k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        }
        return ~crc;
    }

    private static uint Masked(uint crc) => unchecked(((crc >> 15) | (crc << 17)) + 0xa282ead8u);

    [Fact]
    public void Should_write_every_metric_as_a_tensorboard_scalar_that_reads_back()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"cd-tb-{Guid.NewGuid():N}");
        try
        {
            using (var run = new RunDirectory(dir))
            {
                run.Metrics("student-0", 25, 1.5, new Dictionary<string, double> { ["loss_kd"] = 0.75, ["test_accuracy"] = 91.25 }, RunDirectory.KnownColumns);
                run.Metrics("student-0", 50, 3.0, new Dictionary<string, double> { ["loss_kd"] = 0.5, ["lr_s"] = double.NaN }, RunDirectory.KnownColumns);
                run.Metrics("generator", 50, 3.1, new Dictionary<string, double> { ["loss_g"] = -1.25 }, RunDirectory.KnownColumns);
            }
            var file = Assert.Single(Directory.GetFiles(Path.Combine(dir, "tensorboard"), "events.out.tfevents.*"));
            var scalars = ReadEvents(file).Where(e => e.Summary is not null).SelectMany(e => e.Summary.Value.Select(v => (v.Tag, e.Step, v.SimpleValue))).ToArray();
            Assert.Equal([("student-0/loss_kd", 25L, 0.75f), ("student-0/test_accuracy", 25L, 91.25f), ("student-0/loss_kd", 50L, 0.5f), ("generator/loss_g", 50L, -1.25f)], scalars);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
