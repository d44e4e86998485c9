using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using Distill.Engine.Interop;
using Distill.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Cluster.Tests;

/// <summary>
/// Teacher files in every format, read by content, loaded strictly; malformed files refused with
/// the problem named and nothing run. The files are made here byte by byte (pickles included), so
/// that each damage is exactly the one the test names. tools/torch_interop.py and
/// TorchInteropTests check the same readers against files PyTorch itself wrote.
/// </summary>
[Collection(TorchLane.Name), TorchLane]
public sealed class InteropTests : IDisposable
{
    private readonly string dir = Path.Combine(Path.GetTempPath(), $"cd-interop-{Guid.NewGuid():N}");

    public InteropTests()
    {
        Torch.Init();
        Directory.CreateDirectory(dir);
    }

    public void Dispose()
    {
        try { Directory.Delete(dir, true); } catch (IOException) { }
    }

    private string F(string name) => Path.Combine(dir, name);

    private static Classifier Lenet(int seed)
    {
        manual_seed(seed);
        return ModelFactory.Create("lenet5-half", 1, 32, 10);
    }

    private static List<RawTensor> Raw(nn.Module m, Func<string, string>? rename = null) =>
        m.state_dict().Select(kv => RawTensor.From(rename?.Invoke(kv.Key) ?? kv.Key, kv.Value)).ToList();

    private static void AssertSameWeights(nn.Module a, nn.Module b)
    {
        var sb = b.state_dict();
        foreach (var (k, v) in a.state_dict()) Assert.True(v.eq(sb[k]).all().item<bool>(), $"{k} differs");
    }

    private WeightFileException Refused(string file, nn.Module? into = null, string? key = null)
    {
        into ??= Lenet(99);
        var before = Raw(into);
        var e = Assert.Throws<WeightFileException>(() => StateDictLoader.Load(into, file, key));
        // nothing of the model changed
        foreach (var (b, a) in before.Zip(Raw(into))) Assert.Equal(b.Data, a.Data);
        return e;
    }

    /// <summary>Weights with NaN or infinite values (a checkpoint saved after a run diverged) are refused by name and count, and load nothing.</summary>
    [Theory]
    [InlineData("pth", double.NaN)]
    [InlineData("safetensors", double.PositiveInfinity)]
    [InlineData("engine", double.NaN)]
    [InlineData("safetensors", 1e300)]   // a double beyond float's range: infinite in the model
    public void Should_refuse_weights_that_are_not_finite_naming_the_tensor(string format, double bad)
    {
        using var source = Lenet(1);
        var finite = double.IsFinite(bad);
        if (finite) source.to(float64);
        using (no_grad())
        {
            var bias = source.state_dict()["fc1.bias"];
            bias[3] = bad;
            bias[7] = bad;
        }
        var file = F("diverged." + format);
        switch (format)
        {
            case "pth": TorchSaveWriter.Write(file, Raw(source)); break;
            case "safetensors": Safetensors.Write(file, Raw(source)); break;
            default: source.save(file); break;
        }
        var e = Refused(file);
        Assert.Contains("'fc1.bias' holds 2 NaN or infinite value(s) of 42" + (finite ? " as Float32" : ":"), e.Message);
        Assert.Contains(file, e.Message);
    }

    [Theory]
    [InlineData("pth")]
    [InlineData("safetensors")]
    [InlineData("engine")]
    public void Should_load_every_format_by_its_content_whatever_the_file_is_called(string format)
    {
        using var source = Lenet(1);
        var file = F("weights.bin");   // the extension says nothing
        switch (format)
        {
            case "pth": TorchSaveWriter.Write(file, Raw(source)); break;
            case "safetensors": Safetensors.Write(file, Raw(source)); break;
            default: source.save(file); break;
        }
        using var target = Lenet(2);
        var report = StateDictLoader.Load(target, file);
        AssertSameWeights(source, target);
        Assert.Equal(source.state_dict().Count, report.Tensors);
        Assert.Equal(format switch { "pth" => "PyTorch zip", "safetensors" => "safetensors", _ => "ClusterDistill" }, report.Format);
        // only our own format can be a byte copy of a teacher blob (TeacherCopies)
        Assert.Equal(format == "engine", WeightFile.IsEngineFile(file));
    }

    [Fact]
    public void Should_take_the_weights_from_a_checkpoint_dict_by_its_known_key_or_the_named_one()
    {
        using var source = Lenet(1);
        var tensors = Raw(source);
        // {'epoch': 7, 'best_acc1': 91.5, 'optimizer': {}, 'state_dict': {...}} as train_scratch.py saves it
        var pickle = new PickleBytes().Proto().EmptyDict().Mark()
            .Str("epoch").Int(7).Str("best_acc1").Float(91.5).Str("optimizer").EmptyDict()
            .Str("state_dict").StateDict(tensors)
            .SetItems().Stop();
        TorchZip(F("ckpt.pth"), pickle.Bytes, tensors);
        using var target = Lenet(2);
        var report = StateDictLoader.Load(target, F("ckpt.pth"));
        Assert.Equal("state_dict", report.Key);
        AssertSameWeights(source, target);

        // the same weights under a key of the user's own, said in the spec
        var custom = new PickleBytes().Proto().EmptyDict().Mark().Str("epoch").Int(7).Str("ema_weights").StateDict(tensors).SetItems().Stop();
        TorchZip(F("custom.pth"), custom.Bytes, tensors);
        var e = Refused(F("custom.pth"));
        Assert.Contains("epoch: an integer", e.Message);
        Assert.Contains("ema_weights: a dict of 10", e.Message);
        Assert.Contains("checkpoint_key", e.Message);
        using var again = Lenet(3);
        Assert.Equal("ema_weights", StateDictLoader.Load(again, F("custom.pth"), "ema_weights").Key);
        AssertSameWeights(source, again);
        Assert.Contains("no key 'weights'", Refused(F("custom.pth"), key: "weights").Message);

        // nested: {'state_dict': {'model': {...}, 'ema': {...}}}: the dict holding the weights is named by a path of keys
        var nested = new PickleBytes().Proto().EmptyDict().Mark().Str("state_dict").EmptyDict().Mark().Str("model").StateDict(tensors).SetItems().SetItems().Stop();
        TorchZip(F("nested.pth"), nested.Bytes, tensors);
        var outer = Refused(F("nested.pth"), key: "state_dict");
        Assert.Contains("'state_dict' holds a dict of 1 (model: a dict of 10; a deeper key is given as checkpoint_key: state_dict.NAME)", outer.Message);
        Assert.Contains("no key 'ema' under 'state_dict' (checkpoint_key state_dict.ema); it has model: a dict of 10", Refused(F("nested.pth"), key: "state_dict.ema").Message);
        using var deep = Lenet(4);
        Assert.Equal("state_dict.model", StateDictLoader.Load(deep, F("nested.pth"), "state_dict.model").Key);
        AssertSameWeights(source, deep);
    }

    [Fact]
    public void Should_remove_a_dataparallel_prefix_and_apply_a_key_map()
    {
        using var source = Lenet(1);
        TorchSaveWriter.Write(F("dp.pth"), Raw(source, k => "module." + k));
        using var a = Lenet(2);
        var report = StateDictLoader.Load(a, F("dp.pth"));
        Assert.Contains("'module.' prefix removed", report.Renamed);
        AssertSameWeights(source, a);

        Safetensors.Write(F("renamed.safetensors"), Raw(source, k => k.Replace("fc2.", "head.").Replace("conv", "backbone.conv")));
        var e = Refused(F("renamed.safetensors"));
        Assert.Contains("key_map", e.Message);
        using var b = Lenet(3);
        StateDictLoader.Load(b, F("renamed.safetensors"), keyMap: [new("backbone.", ""), new("head.", "fc2.")]);
        AssertSameWeights(source, b);

        // DataParallel around a wrapper: the error lists the names without 'module.', and the map it
        // suggests for them works; a map written for the file's own names works too
        TorchSaveWriter.Write(F("dp-backbone.pth"), Raw(source, k => "module.backbone." + k));
        var listed = Refused(F("dp-backbone.pth"));
        Assert.Contains("unexpected: backbone.conv1.weight", listed.Message);
        Assert.Contains("key_map", listed.Message);
        foreach (var map in new KeyValuePair<string, string>[][] { [new("backbone.", "")], [new("module.backbone.", "")] })
        {
            using var c = Lenet(4);
            var r = StateDictLoader.Load(c, F("dp-backbone.pth"), keyMap: map);
            Assert.Contains($"{source.state_dict().Count} keys renamed by the key map", r.Renamed);
            AssertSameWeights(source, c);
        }
        // a map that begins none of the names is named as such
        var e2 = Assert.Throws<WeightFileException>(() => StateDictLoader.Load(Lenet(5), F("dp-backbone.pth"), keyMap: [new("encoder.", "")]));
        Assert.Contains("key_map's prefixes ('encoder.') begin none of the file's names", e2.Message);
    }

    /// <summary>The mismatches users meet most get a hint of their cause: an MLP made for another image size, torchvision's ResNet given as the CIFAR one.</summary>
    [Fact]
    public void Should_say_what_a_mismatch_most_likely_means()
    {
        manual_seed(1);
        using (var at28 = ModelFactory.Create("hinton-400", 1, 28, 10)) TorchSaveWriter.Write(F("mlp28.pth"), Raw(at28));
        using var at32 = ModelFactory.Create("hinton-400", 1, 32, 10);
        var e = Refused(F("mlp28.pth"), at32);
        Assert.Contains("takes 784 inputs in the file (1x28x28 images) and 1024 here (1x32x32): if the network was trained on 28-pixel images, set data.image_size: 28", e.Message);
        // another width (not another input) is not about the image size
        using (var wider = ModelFactory.Create("hinton-800", 1, 32, 10)) TorchSaveWriter.Write(F("mlp800.pth"), Raw(wider));
        Assert.DoesNotContain("data.image_size", Refused(F("mlp800.pth"), at32).Message);

        using (var tv = ModelFactory.Create("torchvision-resnet18", 3, 32, 10)) TorchSaveWriter.Write(F("tv18.pth"), Raw(tv));
        using var cifar18 = ModelFactory.Create("resnet18", 3, 32, 10);
        Assert.Contains("are torchvision's ResNet: give arch: torchvision-resnet18", Refused(F("tv18.pth"), cifar18).Message);

        // torchvision's ImageNet weights (1000 classes) for a 10-class dataset
        using (var imagenet = ModelFactory.Create("torchvision-resnet18", 3, 32, 1000)) TorchSaveWriter.Write(F("tv18-1000.pth"), Raw(imagenet));
        using var tv10 = ModelFactory.Create("torchvision-resnet18", 3, 32, 10);
        Assert.Contains("the file's classifier (fc.weight) has 1000 classes and this data 10", Refused(F("tv18-1000.pth"), tv10).Message);
    }

    /// <summary>A safetensors checkpoint_key names a prefix with or without its dot.</summary>
    [Fact]
    public void Should_take_a_safetensors_prefix_with_or_without_its_dot()
    {
        using var source = Lenet(1);
        Safetensors.Write(F("prefixed.safetensors"), Raw(source, k => "model." + k));
        foreach (var key in new[] { "model", "model." })
        {
            using var m = Lenet(5);
            StateDictLoader.Load(m, F("prefixed.safetensors"), key);
            AssertSameWeights(source, m);
        }
    }

    [Fact]
    public void Should_convert_half_bfloat16_and_double_weights_to_the_models_dtype()
    {
        using var source = Lenet(1);
        foreach (var dtype in new[] { ScalarType.Float16, ScalarType.BFloat16, ScalarType.Float64 })
        {
            var tensors = source.state_dict().Select(kv =>
                RawTensor.From(kv.Key, kv.Value.is_floating_point() ? kv.Value.to_type(dtype) : kv.Value)).ToList();
            TorchSaveWriter.Write(F($"{dtype}.pth"), tensors);
            using var target = Lenet(2);
            var report = StateDictLoader.Load(target, F($"{dtype}.pth"));
            Assert.Contains($"{dtype} to Float32", report.Converted);
            foreach (var (k, v) in source.state_dict())
            {
                var expected = v.to_type(dtype).to_type(v.dtype);   // the file's precision, exactly
                Assert.True(expected.eq(target.state_dict()[k]).all().item<bool>(), $"{dtype} {k}");
            }
        }
    }

    // ---- malformed files: each refused with the problem named, the model untouched ----

    [Fact]
    public void Should_refuse_an_empty_file()
    {
        File.WriteAllBytes(F("empty.pt"), []);
        Assert.Contains("the file is empty", Refused(F("empty.pt")).Message);
    }

    /// <summary>A named pipe (opening it would wait for a writer for ever), a device and a folder are refused at once.</summary>
    [Fact]
    public async Task Should_refuse_a_pipe_a_device_and_a_folder_without_waiting()
    {
        using (var mkfifo = System.Diagnostics.Process.Start("mkfifo", [F("fifo.pth")])!) await mkfifo.WaitForExitAsync();
        var read = Task.Run(() => Refused(F("fifo.pth")).Message);
        Assert.True(await Task.WhenAny(read, Task.Delay(TimeSpan.FromSeconds(10))) == read, "reading a named pipe as weights waited for a writer");
        Assert.Contains("the file is empty (or not a regular file)", await read);
        Assert.Contains("the file is empty (or not a regular file)", Refused("/dev/zero").Message);
        Directory.CreateDirectory(F("folder.pth"));
        Assert.Contains("a folder, not a weights file", Refused(F("folder.pth")).Message);
    }

    [Fact]
    public void Should_refuse_a_truncated_zip()
    {
        using var source = Lenet(1);
        TorchSaveWriter.Write(F("whole.pth"), Raw(source));
        var bytes = File.ReadAllBytes(F("whole.pth"));
        File.WriteAllBytes(F("cut.pth"), bytes[..(bytes.Length * 2 / 3)]);
        Assert.Contains("not a readable zip archive (truncated or damaged)", Refused(F("cut.pth")).Message);
    }

    /// <summary>A record whose bytes were damaged in place (the zip still opens) is refused by its CRC-32, not loaded as weights.</summary>
    [Fact]
    public void Should_refuse_a_record_whose_bytes_do_not_match_its_crc()
    {
        using var source = Lenet(1);
        var tensors = Raw(source);
        TorchSaveWriter.Write(F("whole.pth"), tensors);
        var bytes = File.ReadAllBytes(F("whole.pth"));
        var largest = tensors.MaxBy(t => t.Data.Length)!;
        var at = bytes.AsSpan().IndexOf(largest.Data.AsSpan(0, 64));
        Assert.True(at > 0, "the largest tensor's bytes are not stored as they are");
        for (var i = at + 100; i < at + 140; i++) bytes[i] ^= 0x55;
        File.WriteAllBytes(F("flipped.pth"), bytes);
        var e = Refused(F("flipped.pth"));
        Assert.Contains("cannot be read (truncated or damaged)", e.Message);
        Assert.Contains("CRC-32", e.Message);
    }

    [Fact]
    public void Should_list_missing_and_unexpected_keys_by_name_and_shape()
    {
        using var source = Lenet(1);
        TorchSaveWriter.Write(F("keys.pth"), Raw(source, k => k == "conv1.weight" ? "conv9.weight" : k));
        var e = Refused(F("keys.pth"));
        Assert.Contains("1 missing: conv1.weight [3, 1, 5, 5]", e.Message);
        Assert.Contains("1 unexpected: conv9.weight [3, 1, 5, 5]", e.Message);
    }

    [Fact]
    public void Should_refuse_a_wrongly_shaped_tensor_naming_both_shapes()
    {
        using var source = Lenet(1);
        var tensors = Raw(source);
        var i = tensors.FindIndex(t => t.Name == "fc2.weight");
        using (var small = randn(5, 42)) tensors[i] = RawTensor.From("fc2.weight", small);   // a 5-class head
        TorchSaveWriter.Write(F("shape.pth"), tensors);
        Assert.Contains("fc2.weight: file [5, 42], model [10, 42]", Refused(F("shape.pth")).Message);
    }

    [Fact]
    public void Should_name_the_key_of_a_state_dict_that_holds_something_other_than_a_tensor()
    {
        using var source = Lenet(1);
        var tensors = Raw(source);
        TorchZip(F("stray.pth"), new PickleBytes().Proto().StateDict(tensors, stray: ("arch", "lenet5-half")).Stop().Bytes, tensors);
        Assert.Contains("'arch' in the state_dict is a string, not a tensor", Refused(F("stray.pth")).Message);
        // the same under a checkpoint key
        var ckpt = new PickleBytes().Proto().EmptyDict().Mark().Str("epoch").Int(3)
            .Str("model").StateDict(tensors, stray: ("arch", "lenet5-half")).SetItems().Stop();
        TorchZip(F("stray-ckpt.pth"), ckpt.Bytes, tensors);
        Assert.Contains("'arch' in the state_dict (under 'model') is a string, not a tensor", Refused(F("stray-ckpt.pth")).Message);
    }

    [Fact]
    public void Should_refuse_a_pickle_that_would_run_a_command_without_running_it()
    {
        var marker = F("ran");
        // what pickle.dumps of an object whose __reduce__ returns (os.system, ("touch <marker>",)) holds
        var pickle = new PickleBytes().Proto().Global("os", "system").Str($"touch {marker}").Tuple1().Reduce().Stop();
        TorchZip(F("evil.pth"), pickle.Bytes, []);
        var e = Refused(F("evil.pth"));
        Assert.Contains("global 'os.system' is not allowed", e.Message);
        Assert.False(File.Exists(marker));
        // the same as STACK_GLOBAL (protocol 4) and with builtins.eval
        var p4 = new PickleBytes().Raw(0x80, 4).ShortStr("builtins").ShortStr("eval").Raw(0x93).Str("1").Tuple1().Reduce().Stop();
        TorchZip(F("evil4.pth"), p4.Bytes, []);
        Assert.Contains("global 'builtins.eval' is not allowed", Refused(F("evil4.pth")).Message);
    }

    [Fact]
    public void Should_refuse_a_whole_pickled_model_and_say_to_save_its_state_dict()
    {
        // torch.save(model): NEWOBJ of __main__.Net, then its __dict__ by BUILD
        var pickle = new PickleBytes().Proto().Global("__main__", "Net").Raw((byte)')').Raw(0x81).EmptyDict().Raw((byte)'b').Stop();
        TorchZip(F("model.pth"), pickle.Bytes, []);
        var e = Refused(F("model.pth"));
        Assert.Contains("'__main__.Net' is not allowed", e.Message);
        Assert.Contains("save model.state_dict() instead", e.Message);
    }

    /// <summary>A checkpoint dict that keeps an argparse.Namespace or a numpy number beside its weights: the entry is named, and the advice is to save the weights alone.</summary>
    [Fact]
    public void Should_name_the_entry_of_a_checkpoint_that_holds_an_object_beside_its_weights()
    {
        using var source = Lenet(1);
        var tensors = Raw(source);
        // {"state_dict": ..., "args": argparse.Namespace(lr=0.1)}: NEWOBJ of the class, then its __dict__ by BUILD
        var args = new PickleBytes().Proto().EmptyDict().Mark().Str("state_dict").StateDict(tensors)
            .Str("args").Global("argparse", "Namespace").Raw((byte)')').Raw(0x81).EmptyDict().Str("lr").Float(0.1).Raw((byte)'s').Raw((byte)'b')
            .SetItems().Stop();
        TorchZip(F("args.pth"), args.Bytes, tensors);
        var e = Refused(F("args.pth"));
        Assert.Contains("global 'argparse.Namespace' is not allowed", e.Message);
        Assert.Contains("the file's entry 'args' holds a pickled Python object; torch.load(weights_only=True) refuses it too; save the weights alone, e.g. torch.save(checkpoint[\"state_dict\"]", e.Message);
        Assert.DoesNotContain("save model.state_dict() instead", e.Message);
        // {"state_dict": ..., "best_acc": numpy.float64(97.5)}
        var numpy = new PickleBytes().Proto().EmptyDict().Mark().Str("state_dict").StateDict(tensors)
            .Str("best_acc").Global("numpy.core.multiarray", "scalar").Raw((byte)')').Reduce()
            .SetItems().Stop();
        TorchZip(F("numpy.pth"), numpy.Bytes, tensors);
        Assert.Contains("the file's entry 'best_acc' holds a numpy value", Refused(F("numpy.pth")).Message);
    }

    [Fact]
    public void Should_refuse_a_storage_record_shorter_than_its_tensor_and_a_view_past_its_storage()
    {
        using var source = Lenet(1);
        var tensors = Raw(source);
        var pickle = new PickleBytes().Proto().StateDict(tensors).Stop();
        var records = tensors.ToList();
        records[0] = records[0] with { Data = records[0].Data[..^4] };     // one float short
        TorchZip(F("short.pth"), pickle.Bytes, records);
        Assert.Contains($"storage '0' should hold {tensors[0].Shape.Aggregate(1L, (a, b) => a * b)} Float32 elements", Refused(F("short.pth")).Message);

        // conv1.weight [3, 1, 5, 5] over a storage of 70 elements
        var smaller = tensors.ToList();
        smaller[0] = smaller[0] with { Data = smaller[0].Data[..280] };
        var bad = new PickleBytes().Proto().StateDict(tensors, storageNumel: [70, .. tensors.Skip(1).Select(t => t.Data.Length / 4L)]).Stop();
        TorchZip(F("view.pth"), bad.Bytes, smaller);
        Assert.Contains("a tensor of shape [3, 1, 5, 5] reaches element 74 of storage '0', which has 70", Refused(F("view.pth")).Message);
    }

    /// <summary>A legacy file in pickle protocol 0 (text) is recognised as torch.save's, and refused with the way to save it again.</summary>
    [Fact]
    public void Should_name_a_legacy_file_in_the_text_pickle_protocol()
    {
        // torch.save(sd, f, _use_new_zipfile_serialization=False, pickle_protocol=0): the magic number, the version, then the system dict
        File.WriteAllBytes(F("p0.pt"), Encoding.ASCII.GetBytes("L119547037146038801333356L\n.I1001\n.(dp0\nVprotocol_version\np1\nI1001\ns."));
        var e = Refused(F("p0.pt"));
        Assert.DoesNotContain("not a PyTorch", e.Message);
        Assert.Contains("pickle protocol 0 (text), which is not read; save the file again with torch.save's default protocol", e.Message);
    }

    [Fact]
    public void Should_refuse_a_big_endian_file_and_an_opcode_no_state_dict_uses()
    {
        using var source = Lenet(1);
        var tensors = Raw(source);
        TorchZip(F("big.pth"), new PickleBytes().Proto().StateDict(tensors).Stop().Bytes, tensors, byteorder: "big");
        Assert.Contains("'big'-endian", Refused(F("big.pth")).Message);
        // INST (protocol 0's way to build any class)
        TorchZip(F("inst.pth"), new PickleBytes().Proto().Mark().Raw(Encoding.ASCII.GetBytes("ios\nsystem\n")).Stop().Bytes, []);
        Assert.Contains("opcode 0x69", Refused(F("inst.pth")).Message);
    }

    [Fact]
    public void Should_refuse_safetensors_whose_header_lies_about_offsets_or_its_length()
    {
        using var source = Lenet(1);
        Safetensors.Write(F("good.safetensors"), Raw(source));
        var bytes = File.ReadAllBytes(F("good.safetensors"));
        var n = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = Encoding.UTF8.GetString(bytes, 8, n);

        // the first tensor's span made 4 bytes longer: it overlaps the next one
        var first = System.Text.RegularExpressions.Regex.Match(header, "\"data_offsets\":\\[0,(\\d+)\\]");
        var lied = header.Replace(first.Value, $"\"data_offsets\":[0,{int.Parse(first.Groups[1].Value) + 4}]");
        WriteSafetensors(F("offsets.safetensors"), lied, bytes.AsSpan(8 + n).ToArray());
        Assert.Contains("data_offsets [0,", Refused(F("offsets.safetensors")).Message);

        // the header length past the end of the file
        var longer = (byte[])bytes.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(longer, (ulong)bytes.Length);
        File.WriteAllBytes(F("length.safetensors"), longer);
        Assert.Contains("runs past the end", Refused(F("length.safetensors")).Message);

        // data cut off: the header describes more than the file has
        File.WriteAllBytes(F("cut.safetensors"), bytes[..^100]);
        Assert.Contains("(truncated?)", Refused(F("cut.safetensors")).Message);

        // a name listed twice
        var entry = System.Text.RegularExpressions.Regex.Match(header, "\"conv1\\.bias\":\\{[^}]*\\}").Value;
        var twice = header.TrimEnd()[..^1] + "," + entry + "}";
        WriteSafetensors(F("twice.safetensors"), twice, bytes.AsSpan(8 + n).ToArray());
        Assert.Contains("'conv1.bias' is listed twice", Refused(F("twice.safetensors")).Message);
    }

    [Theory]
    [InlineData("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 1234\n", "Git LFS pointer")]
    [InlineData("<!DOCTYPE html><html><body>404</body></html>", "HTML page")]
    [InlineData("\n  <html><head><title>Sign in</title></head></html>", "HTML page")]
    [InlineData("<\u0001\u0002\u0003 binary that happens to begin with a '<'", "not a PyTorch (torch.save), safetensors or ClusterDistill weights file")]
    [InlineData("not weights at all, just text", "not a PyTorch (torch.save), safetensors or ClusterDistill weights file")]
    public void Should_name_what_a_file_is_when_it_is_not_weights(string text, string expected)
    {
        File.WriteAllText(F("teacher.pt"), text);
        Assert.Contains(expected, Refused(F("teacher.pt")).Message);
        Assert.False(WeightFile.IsEngineFile(F("teacher.pt")));
    }

    [Fact]
    public void Should_export_a_student_that_reads_back_bit_for_bit_from_both_files()
    {
        using var source = Lenet(1);
        source.save(F("student.pt"));
        StudentExport.Write(F("student.pt"), dir);
        foreach (var file in new[] { StudentExport.SafetensorsFile, StudentExport.PyTorchFile })
        {
            using var back = Lenet(2);
            StateDictLoader.Load(back, F(file));
            AssertSameWeights(source, back);
        }
        // the state_dict file is what torch.save writes: data.pkl, data/N, version, byteorder, stored uncompressed
        using var zip = ZipFile.OpenRead(F(StudentExport.PyTorchFile));
        Assert.Contains(zip.Entries, e => e.FullName == "archive/data.pkl");
        Assert.Contains(zip.Entries, e => e.FullName == "archive/version");
        Assert.All(zip.Entries, e => Assert.Equal(e.Length, e.CompressedLength));
        // the same student gives the same files, whenever they are written
        var again = Directory.CreateDirectory(F("again")).FullName;
        StudentExport.Write(F("student.pt"), again);
        foreach (var file in new[] { StudentExport.SafetensorsFile, StudentExport.PyTorchFile })
            Assert.Equal(File.ReadAllBytes(F(file)), File.ReadAllBytes(Path.Combine(again, file)));
    }

    private static void WriteSafetensors(string path, string header, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        using var fs = File.Create(path);
        var n = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(n, (ulong)h.Length);
        fs.Write(n);
        fs.Write(h);
        fs.Write(data);
    }

    private static void TorchZip(string path, byte[] pickle, IReadOnlyList<RawTensor> records, string byteorder = "little")
    {
        using var fs = File.Create(path);
        using var zip = new ZipArchive(fs, ZipArchiveMode.Create);
        void Put(string name, byte[] data)
        {
            using var s = zip.CreateEntry(name, CompressionLevel.NoCompression).Open();
            s.Write(data);
        }
        Put("archive/data.pkl", pickle);
        for (var k = 0; k < records.Count; k++) Put($"archive/data/{k}", records[k].Data);
        Put("archive/byteorder", Encoding.ASCII.GetBytes(byteorder));
        Put("archive/version", "3\n"u8.ToArray());
    }

    /// <summary>Pickle opcodes, written out by hand as Python's pickle module writes them.</summary>
    private sealed class PickleBytes
    {
        private readonly List<byte> b = [];
        public byte[] Bytes => [.. b];

        public PickleBytes Raw(params byte[] bytes) { b.AddRange(bytes); return this; }
        public PickleBytes Proto() => Raw(0x80, 2);
        public PickleBytes Stop() => Raw((byte)'.');
        public PickleBytes Mark() => Raw((byte)'(');
        public PickleBytes Tuple() => Raw((byte)'t');
        public PickleBytes Tuple1() => Raw(0x85);
        public PickleBytes Reduce() => Raw((byte)'R');
        public PickleBytes SetItems() => Raw((byte)'u');
        public PickleBytes EmptyDict() => Raw((byte)'}');
        public PickleBytes Global(string module, string name) => Raw((byte)'c').Raw(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));

        public PickleBytes Str(string s)
        {
            var u = Encoding.UTF8.GetBytes(s);
            Raw((byte)'X');
            var n = new byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(n, (uint)u.Length);
            return Raw(n).Raw(u);
        }

        public PickleBytes ShortStr(string s) => Raw(0x8c, (byte)s.Length).Raw(Encoding.UTF8.GetBytes(s));

        public PickleBytes Int(long v)
        {
            var n = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(n, (int)v);
            return Raw((byte)'J').Raw(n);
        }

        public PickleBytes Float(double v)
        {
            var n = new byte[8];
            BinaryPrimitives.WriteDoubleBigEndian(n, v);
            return Raw((byte)'G').Raw(n);
        }

        private PickleBytes Ints(long[] v)
        {
            Mark();
            foreach (var x in v) Int(x);
            return Tuple();
        }

        /// <summary>An OrderedDict of tensors over storages 0..n-1, as torch.save pickles a state_dict.</summary>
        /// <param name="stray">an item that is not a tensor (name, string value), appended</param>
        public PickleBytes StateDict(IReadOnlyList<RawTensor> tensors, IReadOnlyList<long>? storageNumel = null, (string Name, string Value)? stray = null)
        {
            Global("collections", "OrderedDict").Raw((byte)')').Reduce().Mark();
            for (var k = 0; k < tensors.Count; k++)
            {
                var t = tensors[k];
                var numel = storageNumel?[k] ?? t.Shape.Aggregate(1L, (a, d) => a * d);
                var strides = new long[t.Shape.Length];
                for (long d = t.Shape.Length - 1, s = 1; d >= 0; s *= t.Shape[d], d--) strides[d] = s;
                Str(t.Name).Global("torch._utils", "_rebuild_tensor_v2").Mark()
                    .Mark().Str("storage").Global("torch", t.DType == ScalarType.Int64 ? "LongStorage" : "FloatStorage").Str($"{k}").Str("cpu").Int(numel).Tuple().Raw((byte)'Q')
                    .Int(0).Ints(t.Shape).Ints(strides).Raw(0x89).Global("collections", "OrderedDict").Raw((byte)')').Reduce()
                    .Tuple().Reduce();
            }
            if (stray is { } x) Str(x.Name).Str(x.Value);
            return SetItems();
        }
    }
}
