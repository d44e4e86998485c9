#!/usr/bin/env python3
"""Reference values from PyTorch for the engine's tests (tests/Cluster.Tests/TorchReferenceTests.cs).

Every number is computed in float64 on the CPU, where PyTorch uses its own reference kernels (oneDNN
serves only float32), with PyTorch's built-in losses where one exists (F.kl_div, F.cross_entropy with
label_smoothing, ...), so that the engine is checked against an implementation it shares no code with.
Inputs and weights are closed formulas that the C# test evaluates too, so the fixture holds only
results: parameter i of a tensor is a function of i, the tensor's shape and its name's last part.

  scripts/torch-reference.sh            # installs python3-torch if needed, rewrites the fixture
  scripts/torch-reference.sh --check    # or: is the committed fixture what this PyTorch computes?

Made with Debian 12's python3-torch (1.13); any PyTorch >= 1.10 gives the same values to ~1e-15.
"""
import json, math, sys
import torch, torch.nn.functional as F
from torch_models import Generator, competition, create, kl_batchmean, total_variation, watch_batchnorm

torch.set_default_dtype(torch.float64)
SUFFIX = {"weight": 1, "bias": 2, "running_mean": 3, "running_var": 4}


def wave(n, a, b):
    """sin(a*i + b), i = 0..n-1: the formula behind every input and weight."""
    return torch.tensor([math.sin(a * i + b) for i in range(n)])


def fill(module):
    """Weights and BatchNorm statistics from a formula of index, shape and name's last part (the C# test has the same)."""
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        suffix = name.rsplit(".", 1)[-1]
        if suffix not in SUFFIX:
            continue   # num_batches_tracked
        dims = list(t.shape)
        code = SUFFIX[suffix] * 101 + sum((k + 1) * 7 * d for k, d in enumerate(dims))
        s = wave(t.numel(), 0.713, 0.029 * code + 0.5)
        if suffix == "weight" and len(dims) >= 2:
            v = s * (1.7 / math.sqrt(t.numel() / dims[0]))
        elif suffix == "weight":
            v = 1 + 0.2 * s
        elif suffix == "running_var":
            v = 0.6 + 0.4 * s * s
        else:
            v = 0.1 * s
        with torch.no_grad():
            t.copy_(v.view(t.shape))


def inputs(shape, a=0.37, b=0.1, scale=1.5):
    n = math.prod(shape)
    return (scale * wave(n, a, b)).view(shape)


def flat(t):
    return [float(v) for v in t.detach().flatten()]


def probe(t):
    """Every s-th element of a large tensor (s = ceil(numel / 512)): keeps the fixture small."""
    v = t.detach().flatten()
    s = max(1, -(-v.numel() // 512))
    return dict(numel=v.numel(), stride=s, values=flat(v[::s]))


def shapes(module):
    """(last name part, shape) of every parameter and statistic, sorted: the architecture's fingerprint."""
    rows = [[n.rsplit(".", 1)[-1], list(t.shape)] for n, t in list(module.named_parameters()) + list(module.named_buffers())
            if n.rsplit(".", 1)[-1] in SUFFIX]
    return sorted(rows, key=lambda r: (r[0], r[1]))


def classifier(arch, channels, size, n, train=False):
    m = create(arch, channels, size)
    fill(m)
    m.train(train)
    x = inputs([n, channels, size, size]).requires_grad_(True)
    logits, feats = m(x, True)
    loss = (logits * inputs(list(logits.shape), 0.53, 0.2, 1.0)).sum() + (feats * inputs(list(feats.shape), 0.29, 0.4, 1.0)).sum()
    first = next(name for name, _ in m.named_parameters())
    grads = torch.autograd.grad(loss, [x, dict(m.named_parameters())[first]])
    return dict(arch=arch, channels=channels, size=size, n=n, train=train, parameters=shapes(m),
                logits=flat(logits), features=flat(feats), input_grad=probe(grads[0]),
                first_weight=first, first_weight_grad=probe(grads[1]))


def generator(width, n):
    g = Generator(latent=100, size=32, channels=1, width=width)
    fill(g)
    g.train()
    z = inputs([n, 100], 0.91, 0.3, 1.0).requires_grad_(True)
    out = g(z)
    loss = (out * inputs(list(out.shape), 0.53, 0.2, 1.0)).sum()
    last = g.b2[3].weight
    gz, gw = torch.autograd.grad(loss, [z, last])
    return dict(width=width, n=n, parameters=shapes(g), output=probe(out), latent_grad=probe(gz), last_conv_weight_grad=probe(gw))


def logits_pair(n=5, k=10):
    return inputs([n, k], 0.71, 0.2, 2.0), inputs([n, k], 0.43, 1.1, 3.0), torch.tensor([(3 * i + 1) % k for i in range(n)])


def losses():
    s0, t0, y = logits_pair()
    k = s0.shape[1]
    out = []

    def case(name, fn, *args, **params):
        s = s0.clone().requires_grad_(True); t = t0.clone().requires_grad_(True)
        v = fn(s, t, *args)
        gs, gt = torch.autograd.grad(v, [s, t], allow_unused=True)
        z = torch.zeros_like(s0)
        out.append(dict(name=name, params=params, value=float(v), student_grad=flat(gs if gs is not None else z),
                        teacher_grad=flat(gt if gt is not None else z)))

    for temp, alpha in ((1.0, 0.0), (4.0, 0.1), (20.0, 0.5)):
        case("hinton", lambda s, t: alpha * F.cross_entropy(s, y) + (1 - alpha) * temp * temp *
             kl_batchmean(F.softmax(t / temp, 1), F.log_softmax(s / temp, 1)), temperature=temp, alpha=alpha)
    case("soft_cross_entropy", lambda s, t: -(F.softmax(t, 1) * F.log_softmax(s, 1)).sum(1).mean())
    case("label_smoothing", lambda s, t: F.cross_entropy(s, y, label_smoothing=0.1), epsilon=0.1)
    a, temp, alpha = 0.99, 20.0, 0.95
    virt = F.one_hot(y, k).double() * a + (1 - F.one_hot(y, k).double()) * ((1 - a) / (k - 1))
    for form, soft in (("power", F.softmax(virt.log() / temp, 1)), ("code", F.softmax(virt / temp, 1))):
        case("tfkd_reg", lambda s, t: (1 - alpha) * F.cross_entropy(s, y) + alpha * temp * temp *
             kl_batchmean(soft, F.log_softmax(s / temp, 1)), form=form, correct=a, temperature=temp, alpha=alpha)
    # DAFL's generator losses, on the teacher's logits ("t") and features (relu of the student rows)
    case("dafl_one_hot", lambda s, t: F.cross_entropy(t, t.argmax(1)), form="cross_entropy")
    case("dafl_one_hot", lambda s, t: (F.softmax(t, 1) - F.one_hot(t.argmax(1), k)).abs().sum(1).mean(), form="l1")
    case("dafl_activation", lambda s, t: -F.relu(s).abs().sum(1).mean(), norm="paper")
    case("dafl_activation", lambda s, t: -F.relu(s).abs().mean(), norm="code")
    ent = lambda p: torch.special.entr(p).sum(-1)   # -sum p ln p
    case("dafl_entropy", lambda s, t: -ent(F.softmax(t, 1).mean(0)) / k, form="paper")
    case("dafl_entropy", lambda s, t: -ent(F.softmax(t, 1).mean(0)) / math.log(10), form="code")
    case("dafl_entropy", lambda s, t: -(ent(F.softmax(t, 1)) / k).mean(), form="per_sample")

    def js_code(s, t, T=3.0):
        # the official ADI code: KLDivLoss(log P, M) and KLDivLoss(log Q, M) on clamped softmaxes
        p, q = F.softmax(s / T, 1), F.softmax(t / T, 1)
        m = ((p + q) / 2).clamp(0.001, 1)
        p, q = p.clamp(0.001, 1), q.clamp(0.001, 1)
        js = 0.5 * (F.kl_div(p.log(), m, reduction="batchmean") + F.kl_div(q.log(), m, reduction="batchmean"))
        return 1 - js.clamp(0, 1)
    case("competition", lambda s, t: competition(t, s), form="paper")
    case("competition", js_code, form="code", temperature=3.0)
    return out


def images_losses():
    out = []
    for shape in ([2, 1, 6, 7], [3, 3, 5, 5]):
        x0 = inputs(shape, 0.83, 0.6, 1.2)
        def tv_code(x):
            d1, d2 = x[:, :, :, :-1] - x[:, :, :, 1:], x[:, :, :-1, :] - x[:, :, 1:, :]
            d3, d4 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:], x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
            return torch.norm(d1) + torch.norm(d2) + torch.norm(d3) + torch.norm(d4)
        for name, fn in (("tv_paper", total_variation), ("tv_code", tv_code), ("l2", torch.norm)):
            x = x0.clone().requires_grad_(True)
            v = fn(x)
            out.append(dict(name=name, shape=shape, value=float(v), grad=flat(torch.autograd.grad(v, x)[0])))
    return out


def objectives():
    """DeepInversion / ADI pixel objectives through a real teacher, and DAFL's generator objective."""
    out = []
    teacher = create("resnet8", 1, 32); fill(teacher); teacher.eval()
    student = create("lenet5-half", 1, 32); fill(student); student.eval()
    stats = []
    watch_batchnorm(teacher, stats)
    targets = torch.tensor([0, 3, 7, 9])
    w = dict(feature=0.7, first_bn=10.0, tv=3e-3, l2=1.5e-3, competition=2.0)
    for adi in (False, True):
        x = inputs([4, 1, 32, 32], 0.59, 0.9, 1.0).requires_grad_(True)
        stats.clear()
        logits = teacher(x)
        ce = F.cross_entropy(logits, targets)
        feature = w["first_bn"] * stats[0] + sum(stats[1:])
        total = ce + w["feature"] * feature + w["tv"] * total_variation(x) + w["l2"] * torch.norm(x)
        parts = dict(ce=float(ce), r_feature=float(feature), bn_layers=len(stats))
        if adi:
            compete = competition(logits, student(x))
            total = total + w["competition"] * compete
            parts["r_compete"] = float(compete)
        out.append(dict(name="adi" if adi else "deepinversion", weights=w, targets=targets.tolist(), value=float(total),
                        parts=parts, grad=probe(torch.autograd.grad(total, x)[0])))
    lenet = create("lenet5", 1, 32); fill(lenet); lenet.eval()
    x = inputs([6, 1, 32, 32], 0.47, 0.8, 1.3).requires_grad_(True)
    logits, feats = lenet(x, True)
    p = F.softmax(logits, 1).mean(0)
    total = F.cross_entropy(logits, logits.argmax(1)) + 0.1 * -feats.abs().mean() + 5 * (p * torch.log10(p)).sum()
    out.append(dict(name="dafl_generator_code", weights=dict(activation=0.1, entropy=5.0), value=float(total),
                    grad=probe(torch.autograd.grad(total, x)[0])))
    return out


def main():
    doc = dict(made_by=f"tools/torch_reference.py with PyTorch {torch.__version__}, float64, CPU",
               classifiers=[classifier("lenet5", 1, 32, 3), classifier("lenet5-half", 1, 32, 3),
                            classifier("resnet8", 1, 32, 3), classifier("resnet8", 3, 32, 3, train=True),
                            classifier("hinton-400", 1, 28, 3)],
               generators=[generator(128, 4), generator(32, 6)],
               losses=losses(), image_losses=images_losses(), objectives=objectives())
    json.dump(doc, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
