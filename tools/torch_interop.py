#!/usr/bin/env python3
"""PyTorch's side of bringing a teacher to ClusterDistill and taking the student back
(tests/Cluster.Tests/TorchInteropTests.cs, docs/pytorch.md). Runs with Debian's python3-torch
(1.13; scripts/python-torch.sh installs it) or any later PyTorch.

  torch_interop.py models OUT [ARCH ...]
      For each architecture: a seeded random model (BatchNorm statistics made non-trivial), saved
      by torch.save(model.state_dict()) as OUT/<arch>.pth, and its float32 logits on fixed inputs;
      torchvision's own resnet18/34/50 classes when torchvision is installed. Also the variants a
      user's files come in: the legacy format, fp16, a checkpoint dict with a DataParallel prefix.
      Writes OUT/models.json.
  torch_interop.py train-mnist MNIST_DIR OUT [--steps N]
      Trains LeNet-5 on MNIST in PyTorch (inputs prepared as the engine prepares them: /255,
      bilinear to 32x32, normalised), saves OUT/teacher.pth, and writes OUT/teacher.json: the test
      accuracy and the logits of the first 64 test images.
  torch_interop.py evaluate WEIGHTS ARCH DATA_DIR [--dataset D] [--size N] [--onnx FILE]
  torch_interop.py evaluate RUN_DIR DATA_DIR [--onnx FILE]
      Loads an exported student (student.pth, torch.load(weights_only=True), or
      student.safetensors) into the PyTorch definition of ARCH (tools/torch_models.py), prints
      its test accuracy as JSON, and with --onnx exports it with torch.onnx.export. Given a run
      directory, the student, its architecture, the dataset and the image size are the run's
      (result.json, spec.resolved.yaml). DATA_DIR holds the test set as the engine reads it: the
      idx files of MNIST or Fashion-MNIST, or CIFAR's binary batches (test_batch.bin; CIFAR-100's
      test.bin). Images are prepared as the engine prepares them: /255, bilinear to the image
      size where it differs, normalised with the dataset's constants. A problem with what it is
      given (no such file, not a student file, weights that do not fit, no test set there, an
      export that fails) is one line on stderr and exit code 1; when only the export fails, the
      JSON is printed all the same, with the accuracy and onnx_error.
"""
import argparse, copy, gzip, json, math, os, struct, sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import ARCHITECTURES, create  # noqa: E402

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# per dataset, as the engine normalises (DataSplits.Constants): mean, std, classes
DATASETS = {
    "mnist": ([0.1307], [0.3081], 10),
    "fashion-mnist": ([0.2860], [0.3530], 10),
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010], 10),
    "cifar100": ([0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761], 100),
}


def wave(n, a, b):
    return torch.tensor([math.sin(a * i + b) for i in range(n)], dtype=torch.float32)


def fixed_inputs(shape):
    n = math.prod(shape)
    return (1.5 * wave(n, 0.37, 0.1)).view(shape)


def size_of(arch):
    if arch.startswith("torchvision-"):
        return 3, 224
    if arch.startswith(("lenet", "hinton")):
        return 1, 32 if arch.startswith("lenet") else 28
    return 3, 32


def build(arch, channels, size):
    if arch.startswith("torchvision-"):
        try:
            import torchvision
            return getattr(torchvision.models, arch[len("torchvision-"):])(num_classes=10), "torchvision.models"
        except ImportError:
            pass
    return create(arch, channels, size, 10), "tools/torch_models.py"


def rounded_logits(m, x, dtype):
    """The logits of the model with its weights rounded to dtype and back (what loading that file gives)."""
    r = copy.deepcopy(m)
    with torch.no_grad():
        for t in list(r.parameters()) + [b for b in r.buffers() if b.is_floating_point()]:
            t.copy_(t.to(dtype).float())
        return r(x).flatten().tolist()


def models(out, archs):
    os.makedirs(out, exist_ok=True)
    doc = dict(made_by=f"tools/torch_interop.py with PyTorch {torch.__version__}", models=[])
    for k, arch in enumerate(archs or ARCHITECTURES):
        torch.manual_seed(100 + k)
        channels, size = size_of(arch)
        m, source = build(arch, channels, size)
        with torch.no_grad():
            for name, b in m.named_buffers():       # statistics as a trained network has them
                if name.endswith("running_mean"):
                    b.copy_(0.1 * torch.randn_like(b))
                elif name.endswith("running_var"):
                    b.copy_(0.5 + torch.rand_like(b))
                elif name.endswith("num_batches_tracked"):
                    b.fill_(1000 + k)
        m.eval()
        x = fixed_inputs([2, channels, size, size])
        with torch.no_grad():
            logits = m(x)
        files = {"state_dict": f"{arch}.pth"}
        torch.save(m.state_dict(), os.path.join(out, files["state_dict"]))
        if k % 3 == 0:      # the other shapes a user's file takes, spread over the architectures
            # the legacy format in each pickle protocol torch.save takes (2 is its default)
            proto = [2, 1, 3, 4, 5][(k // 3) % 5]
            files["legacy"] = f"{arch}.legacy-p{proto}.pt"
            files["legacy_protocol"] = proto
            torch.save(m.state_dict(), os.path.join(out, files["legacy"]), _use_new_zipfile_serialization=False, pickle_protocol=proto)
            files["fp64"] = f"{arch}.fp64.pt"     # float64 holds float32 exactly: the same logits
            torch.save({n: (t.double() if t.is_floating_point() else t) for n, t in m.state_dict().items()}, os.path.join(out, files["fp64"]))
        if k % 3 == 1:
            files["fp16_checkpoint"] = f"{arch}.ckpt"
            half = {"module." + n: (t.half() if t.is_floating_point() else t) for n, t in m.state_dict().items()}
            # beside the weights, the values torch.load(weights_only=True) also takes: a size, a dtype, a device
            torch.save({"epoch": 200, "arch": arch, "best_acc1": 95.1, "state_dict": half,
                        "input_size": torch.Size([channels, size, size]), "dtype": torch.float16, "device": torch.device("cuda", 0),
                        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9}]}},
                       os.path.join(out, files["fp16_checkpoint"]))
            files["fp16_logits"] = rounded_logits(m, x, torch.float16)
        if k % 3 == 2:
            files["bf16"] = f"{arch}.bf16.pth"
            torch.save({n: (t.bfloat16() if t.is_floating_point() else t) for n, t in m.state_dict().items()}, os.path.join(out, files["bf16"]))
            files["bf16_logits"] = rounded_logits(m, x, torch.bfloat16)
        doc["models"].append(dict(arch=arch, source=source, channels=channels, size=size, files=files,
                                  input=[2, channels, size, size], logits=logits.flatten().tolist()))
    with open(os.path.join(out, "models.json"), "w") as f:
        json.dump(doc, f)


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = [struct.unpack(">I", data[4 + 4 * i: 8 + 4 * i])[0] for i in range(magic & 0xFF)]
    return torch.frombuffer(bytearray(data[4 + 4 * len(dims):]), dtype=torch.uint8).view(dims)


def find(d, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    raise FileNotFoundError(f"{d} has no {stem}")


def mnist(d, split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(find(d, f"{prefix}-images-idx3-ubyte")).float().div(255).unsqueeze(1)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    y = read_idx(find(d, f"{prefix}-labels-idx1-ubyte")).long()
    return ((x - MNIST_MEAN) / MNIST_STD).contiguous(), y


def accuracy(m, x, y):
    m.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 500):
            correct += (m(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum().item()
    return 100.0 * correct / len(x)


def train_mnist(d, out, steps):
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    x, y = mnist(d, "train")
    tx, ty = mnist(d, "test")
    m = create("lenet5", 1, 32, 10)
    opt = torch.optim.Adam(m.parameters(), 2e-3)
    g = torch.Generator().manual_seed(1)
    m.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = F.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    os.makedirs(out, exist_ok=True)
    torch.save(m.state_dict(), os.path.join(out, "teacher.pth"))
    m.eval()
    with torch.no_grad():
        logits = m(tx[:64])
    doc = dict(made_by=f"tools/torch_interop.py with PyTorch {torch.__version__}", steps=steps,
               accuracy=accuracy(m, tx, ty), logits=logits.flatten().tolist())
    with open(os.path.join(out, "teacher.json"), "w") as f:
        json.dump(doc, f)
    print(json.dumps(dict(accuracy=doc["accuracy"])))


class EvaluateError(Exception):
    """A problem with what evaluate was given, said in one line (no traceback)."""


def load_weights(path):
    """A state_dict from student.pth (or any torch.save file: zip or legacy) or student.safetensors, by content."""
    if not os.path.isfile(path):
        raise EvaluateError(f"{path}: no such file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(9)
    kw = {"weights_only": True} if "weights_only" in torch.load.__code__.co_varnames else {}
    # safetensors first: its header length can begin with any byte, a pickle's 0x80 included
    n = struct.unpack("<Q", head[:8])[0] if len(head) >= 9 else 0
    safetensors = len(head) >= 9 and head[8:9] == b"{" and 8 + n <= size
    pickle = head[:1] == b"\x80" and len(head) > 1 and 1 <= head[1] <= 5 or head[:2] == b"L1"
    if not safetensors and (head[:2] == b"PK" or pickle):     # torch.save: zip, or the legacy format (a pickle)
        try:
            sd = torch.load(path, map_location="cpu", **kw)
        except Exception as e:
            raise EvaluateError(f"{path}: torch.load cannot read it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        if not isinstance(sd, dict):
            raise EvaluateError(f"{path}: holds a {type(sd).__name__}, not a state_dict")
        return sd
    if not safetensors:
        hint = " (ClusterDistill's own format, as teacher.pt and student.pt are: evaluate the student.pth or student.safetensors every run writes beside them)" \
            if len(head) >= 2 and head[0] < 0x80 and head[1] < 0x80 and head[0] > 0 else ""
        raise EvaluateError(f"{path}: not a torch.save or safetensors file{hint}")
    # safetensors, read with the standard library (bookworm has no python3-safetensors)
    dtypes = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
    with open(path, "rb") as f:
        f.read(8)
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise EvaluateError(f"{path}: a safetensors header that is not JSON ({e})")
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        try:
            b, end = e["data_offsets"]
            if e["dtype"] not in dtypes or not 0 <= b <= end <= len(data):
                raise EvaluateError(f"{path}: tensor '{name}' has dtype {e['dtype']} or offsets {b}-{end} this reader does not take")
            t = torch.frombuffer(bytearray(data[b:end]), dtype=dtypes[e["dtype"]]) if end > b else torch.empty(0, dtype=dtypes[e["dtype"]])
            out[name] = t.reshape(e["shape"]).clone()
        except (KeyError, TypeError, ValueError, RuntimeError) as x:
            raise EvaluateError(f"{path}: tensor '{name}' of the safetensors header is not readable ({type(x).__name__}: {x})")
    return out


def test_set(d, dataset, size):
    """The test images as the engine prepares them: /255, bilinear to size where it differs, normalised."""
    mean, std, _ = DATASETS[dataset]
    if dataset.startswith("cifar"):
        cifar100 = dataset == "cifar100"
        with open(find(d, "test.bin" if cifar100 else "test_batch.bin"), "rb") as f:
            data = f.read()
        record = (2 if cifar100 else 1) + 3 * 32 * 32
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(-1, record)
        y = raw[:, record - 3 * 32 * 32 - 1].long()
        x = raw[:, record - 3 * 32 * 32:].reshape(-1, 3, 32, 32).float().div(255)
    else:
        x = read_idx(find(d, "t10k-images-idx3-ubyte")).float().div(255).unsqueeze(1)
        y = read_idx(find(d, "t10k-labels-idx1-ubyte")).long()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous(), y


def of_run(run_dir):
    """A run directory's student file, architecture, dataset and image size."""
    result_file = os.path.join(run_dir, "result.json")
    if not os.path.isfile(result_file):
        raise EvaluateError(f"{run_dir} is not a finished run's directory: it has no result.json")
    with open(result_file) as f:
        result = json.load(f)
    spec = os.path.join(run_dir, "spec.resolved.yaml")
    try:
        try:
            import yaml
            with open(spec) as f:
                size = int(yaml.safe_load(f)["data"]["image_size"])
        except ImportError:
            import re
            with open(spec) as f:
                size = int(re.search(r"image_size: *(\d+)", f.read()).group(1))
        arch, dataset = result["student_arch"], result["dataset"]
    except (OSError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise EvaluateError(f"{run_dir}: its result.json or spec.resolved.yaml does not say the student's architecture, dataset and image size ({type(e).__name__}: {e})")
    weights = next((os.path.join(run_dir, n) for n in ("student.pth", "student.safetensors") if os.path.exists(os.path.join(run_dir, n))), None)
    if weights is None:
        raise EvaluateError(f"{run_dir} has no student.pth or student.safetensors")
    return weights, arch, dataset, size


def onnx_export(m, example, path):
    """torch.onnx.export with the TorchScript exporter (PyTorch 2.9 and later default to the dynamo one, which needs onnx and onnxscript)."""
    import inspect
    kw = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(m, example, path, input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, **kw)


def evaluate(weights, arch, d, onnx, dataset=None, size=None):
    if os.path.isdir(weights):
        given = (dataset, size)
        weights, arch, dataset, size = of_run(weights)
        for what, value, run in (("--dataset", given[0], dataset), ("--size", given[1], size)):
            if value is not None and value != run:
                raise EvaluateError(f"{what} {value}: the run's student was trained on {dataset} at {size} pixels; leave {what} out for a run directory")
    elif not os.path.exists(weights):
        raise EvaluateError(f"{weights}: no such file or run directory")
    dataset = dataset or "mnist"
    if dataset not in DATASETS:
        raise EvaluateError(f"dataset '{dataset}' is not one of {', '.join(DATASETS)}")
    if not os.path.isdir(d):
        raise EvaluateError(f"{d}: no such data folder (the test set as the engine reads it, e.g. ~/.cache/clusterdistill/data/mnist)")
    channels = len(DATASETS[dataset][0])
    size = size or size_of(arch)[1]
    try:
        m = create(arch, channels, size, DATASETS[dataset][2])
    except (KeyError, ValueError, IndexError):
        raise EvaluateError(f"architecture '{arch}' is not one of {', '.join(ARCHITECTURES)}")
    sd = load_weights(weights)
    try:
        m.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        raise EvaluateError(f"{weights} does not fit {arch} for {dataset} at {size} pixels ({'; '.join(lines[1:4])}); "
                            "give the architecture, --dataset and --size the run had, or the run directory")
    try:
        tx, ty = test_set(d, dataset, size)
    except FileNotFoundError as e:
        raise EvaluateError(str(e).replace("[Errno 2] ", ""))
    except (OSError, ValueError, RuntimeError) as e:     # a truncated or damaged test file
        raise EvaluateError(f"the test set in {d} cannot be read ({type(e).__name__}: {e})")
    try:
        correct = accuracy(m, tx, ty)
    except RuntimeError as e:     # weights that fit, a size the network cannot take (LeNet-5 needs 32 pixels)
        raise EvaluateError(f"{arch} cannot evaluate {size}-pixel images ({str(e).splitlines()[0]}); "
                            "give the --size the run had, or the run directory")
    result = dict(arch=arch, weights=weights, dataset=dataset, image_size=size, accuracy=correct,
                  # whether the file lists its tensors as the module's own state_dict() does
                  same_key_order=list(sd) == list(m.state_dict()))
    failed = None
    if onnx:
        m.eval()
        try:
            onnx_export(m, tx[:1], onnx)
            result["onnx"] = onnx
        except Exception as e:     # the accuracy still stands: it is printed with the reason
            failed = f"torch.onnx.export to {onnx} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            result["onnx_error"] = failed
    print(json.dumps(result))
    if failed:
        raise EvaluateError(failed)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("models"); a.add_argument("out"); a.add_argument("archs", nargs="*")
    b = sub.add_parser("train-mnist"); b.add_argument("mnist"); b.add_argument("out"); b.add_argument("--steps", type=int, default=400)
    c = sub.add_parser("evaluate"); c.add_argument("weights", help="student.pth, student.safetensors, or a run directory")
    c.add_argument("rest", nargs="+", help="ARCH DATA_DIR, or DATA_DIR after a run directory")
    c.add_argument("--dataset", choices=sorted(DATASETS)); c.add_argument("--size", type=int); c.add_argument("--onnx")
    args = ap.parse_args()
    if args.cmd == "models":
        models(args.out, args.archs)
    elif args.cmd == "train-mnist":
        train_mnist(args.mnist, args.out, args.steps)
    else:
        try:
            if os.path.isdir(args.weights):
                if len(args.rest) != 1:
                    ap.error("evaluate RUN_DIR DATA_DIR: give the run directory and the data folder")
                evaluate(args.weights, None, args.rest[0], args.onnx, args.dataset, args.size)
            elif len(args.rest) == 1 and not os.path.exists(args.weights):
                raise EvaluateError(f"{args.weights}: no such run directory or weights file")
            else:
                if len(args.rest) != 2:
                    ap.error("evaluate WEIGHTS ARCH DATA_DIR: give the weights file, its architecture and the data folder")
                evaluate(args.weights, args.rest[0], args.rest[1], args.onnx, args.dataset, args.size)
        except EvaluateError as e:
            sys.exit(f"evaluate: {e}")


if __name__ == "__main__":
    main()
