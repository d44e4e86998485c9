#!/usr/bin/env python3
"""The engine's benchmark workloads in PyTorch, for a side-by-side timing on the same GPU.

Same models, batch sizes and step contents as src/Distill.Engine/Benchmarks/Benchmarks.cs:
  DAFL step (generator + teacher + student, batch 512 and the quick spec's 128/G32),
  DeepInversion step (ResNet-20 1x32x32 at 256/1024; ResNet-34 3x32x32 at 256/1024 on CUDA),
  ADI step, KD student step, teacher labelling at T=4.
Medians after warm-up, synchronising CUDA. Writes JSON + Markdown like `Cluster.Seed bench`.

  python3 tools/bench_pytorch.py --device cuda --out $OUT/bench-pytorch-cuda.json
"""
import argparse, json, statistics, time, math
import torch, torch.nn as nn, torch.nn.functional as F


class LeNet5(nn.Module):
    def __init__(self, half=False):
        super().__init__()
        c1, c2, c3, f1 = (3, 8, 60, 42) if half else (6, 16, 120, 84)
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(1, c1, 5), nn.Conv2d(c1, c2, 5), nn.Conv2d(c2, c3, 5)
        self.fc1, self.fc2 = nn.Linear(c3, f1), nn.Linear(f1, 10)

    def forward(self, x, features=False):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        f = F.relu(self.conv3(x)).flatten(1)
        out = self.fc2(F.relu(self.fc1(f)))
        return (out, f) if features else out


class Generator(nn.Module):
    def __init__(self, latent=100, size=32, channels=1, width=128):
        super().__init__()
        self.init, self.width = size // 4, width
        self.l1 = nn.Linear(latent, width * self.init ** 2)
        self.bn0 = nn.BatchNorm2d(width)
        self.b1 = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width, 0.8), nn.LeakyReLU(0.2))
        self.b2 = nn.Sequential(nn.Conv2d(width, width // 2, 3, 1, 1), nn.BatchNorm2d(width // 2, 0.8), nn.LeakyReLU(0.2),
                                nn.Conv2d(width // 2, channels, 3, 1, 1), nn.Tanh(), nn.BatchNorm2d(channels, affine=False))

    def forward(self, z):
        x = self.bn0(self.l1(z).view(z.shape[0], self.width, self.init, self.init))
        x = self.b1(F.interpolate(x, scale_factor=2))
        return self.b2(F.interpolate(x, scale_factor=2))


class Block(nn.Module):
    def __init__(self, i, o, s):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o)
        self.c2, self.b2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
        self.sc = nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o)) if s != 1 or i != o else None

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (x if self.sc is None else self.sc(x)))


class ResNet(nn.Module):
    def __init__(self, blocks, widths, channels):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0])
        layers, i = [], widths[0]
        for s, (n, w) in enumerate(zip(blocks, widths)):
            for b in range(n):
                layers.append(Block(i, w, 2 if s > 0 and b == 0 else 1)); i = w
        self.layers, self.fc = nn.Sequential(*layers), nn.Linear(i, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.layers(F.relu(self.bn(self.stem(x)))), 1).flatten(1))


def timed(name, model, batch, warm, reps, dev, step):
    for _ in range(warm): step()
    if dev.type == "cuda": torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); step()
        if dev.type == "cuda": torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1000)
    ms = statistics.median(ts)
    row = dict(Workload=name, Model=model, Batch=batch, MsPerStep=round(ms, 3), ImagesPerSecond=round(batch / (ms / 1000), 1), Repeats=reps)
    print(f"  {name:26} {model:34} batch {batch:5}  {ms:9.2f} ms/step  {row['ImagesPerSecond']:9.0f} img/s", flush=True)
    return row


def dafl(dev, batch, width):
    t, s, g = LeNet5().to(dev).eval(), LeNet5(True).to(dev), Generator(width=width).to(dev)
    for p in t.parameters(): p.requires_grad_(False)
    og, os_ = torch.optim.Adam(g.parameters(), 0.2), torch.optim.Adam(s.parameters(), 2e-3)
    def step():
        z = torch.randn(batch, 100, device=dev)
        og.zero_grad(); os_.zero_grad()
        x = g(z); out, f = t(x, True)
        p = F.softmax(out, 1).mean(0)
        lg = F.cross_entropy(out, out.argmax(1)) - 0.1 * f.abs().mean() + 5 * (p * torch.log10(p)).sum()
        lk = -(F.softmax(out.detach(), 1) * F.log_softmax(s(x.detach()), 1)).sum() / batch
        (lg + lk).backward(); og.step(); os_.step()
    return step


def deepinversion(dev, blocks, widths, channels, batch, adi):
    t = ResNet(blocks, widths, channels).to(dev).eval()
    for p in t.parameters(): p.requires_grad_(False)
    student = LeNet5(True).to(dev).eval() if adi else None
    stats = []
    def hook(m, i, o):
        x = i[0]; mean = x.mean([0, 2, 3]); var = x.permute(1, 0, 2, 3).flatten(1).var(1, unbiased=False)
        stats.append(torch.norm(m.running_mean - mean, 2) + torch.norm(m.running_var - var, 2))
    for m in t.modules():
        if isinstance(m, nn.BatchNorm2d): m.register_forward_hook(hook)
    x = torch.randn(batch, channels, 32, 32, device=dev, requires_grad=True)
    y = torch.arange(batch, device=dev) % 10
    opt = torch.optim.Adam([x], 0.1, betas=(0.5, 0.9))
    def step():
        stats.clear(); opt.zero_grad()
        xj = torch.roll(x, shifts=(1, -1), dims=(2, 3))
        out = t(xj)
        rf = stats[0] * 10 + sum(stats[1:])
        c, l, r = xj[:, :, :-1, 1:], xj[:, :, :-1, :-1], xj[:, :, 1:, 1:]
        tv = torch.sqrt((l - c) ** 2 + (r - c) ** 2 + 1e-8).sum() / batch
        loss = F.cross_entropy(out, y) + 10 * rf + 1e-4 * tv + 1e-5 * xj.norm()
        if student is not None:
            pt, ps = F.softmax(out, 1), F.softmax(student(xj), 1); m = (pt + ps) / 2
            js = 0.5 * (F.kl_div(m.log(), pt, reduction="batchmean") + F.kl_div(m.log(), ps, reduction="batchmean"))
            loss = loss + (1 - js)
        loss.backward(); opt.step()
    return step


def kd(dev, batch):
    t, s = LeNet5().to(dev).eval(), LeNet5(True).to(dev)
    opt = torch.optim.Adam(s.parameters(), 1e-3)
    x, y = torch.randn(batch, 1, 32, 32, device=dev), torch.randint(0, 10, (batch,), device=dev)
    def step():
        with torch.no_grad(): tl = t(x)
        opt.zero_grad(); sl = s(x)
        loss = 0.1 * F.cross_entropy(sl, y) + 0.9 * 16 * F.kl_div(F.log_softmax(sl / 4, 1), F.softmax(tl / 4, 1), reduction="batchmean")
        loss.backward(); opt.step()
    return step


def labelling(dev, batch):
    t = LeNet5().to(dev).eval(); x = torch.randn(batch, 1, 32, 32, device=dev)
    def step():
        with torch.no_grad(): F.softmax(t(x) / 4, 1).sum().item()
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="results/bench-pytorch.json")
    a = ap.parse_args()
    dev = torch.device(a.device); torch.manual_seed(0)
    warm, reps = 3, 30 if dev.type == "cuda" else 8
    rows = [timed("DAFL step (G+T+S)", "DAFL-G128 / lenet5 / lenet5-half", 512, warm, reps, dev, dafl(dev, 512, 128)),
            timed("DAFL step (G+T+S)", "DAFL-G32 / lenet5 / lenet5-half", 128, warm, reps, dev, dafl(dev, 128, 32))]
    for b in (256, 1024):
        rows.append(timed("DeepInversion step", "resnet20 (1x32x32)", b, warm, reps, dev, deepinversion(dev, [3, 3, 3], [16, 32, 64], 1, b, False)))
    if dev.type == "cuda":
        for b in (256, 1024):
            rows.append(timed("DeepInversion step", "resnet34 (3x32x32)", b, warm, reps, dev, deepinversion(dev, [3, 4, 6, 3], [64, 128, 256, 512], 3, b, False)))
    rows.append(timed("ADI step (+student)", "resnet20 / lenet5-half", 256, warm, reps, dev, deepinversion(dev, [3, 3, 3], [16, 32, 64], 1, 256, True)))
    rows.append(timed("KD student step", "lenet5 -> lenet5-half", 256, warm, reps, dev, kd(dev, 256)))
    rows.append(timed("teacher labelling (T=4)", "lenet5", 1024, warm, reps * 3, dev, labelling(dev, 1024)))
    table = dict(Device=dev.type, Machine=f"PyTorch {torch.__version__}" + (f", {torch.cuda.get_device_name()}" if dev.type == "cuda" else ""),
                 When=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), Rows=rows)
    import os; os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    json.dump(table, open(a.out, "w"), indent=2)
    print("saved", a.out)


if __name__ == "__main__":
    main()
