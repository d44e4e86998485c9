#!/usr/bin/env python3
"""The engine's benchmark workloads in PyTorch, for a side-by-side timing on the same GPU.

Same models, batch sizes and step contents as src/Distill.Engine/Benchmarks/Benchmarks.cs:
  DAFL step (generator + teacher + student, batch 512 and the quick spec's 128/G32),
  DeepInversion step (ResNet-20 1x32x32 at 256/1024; ResNet-34 3x32x32 at 256/1024 on CUDA),
  ADI step, KD student step, teacher labelling at T=4.
Medians after warm-up, synchronising CUDA. Writes JSON + Markdown like `Cluster.Seed bench`.

  python3 tools/bench_pytorch.py --device cuda --out $OUT/bench-pytorch-cuda.json
"""
import argparse, json, os, statistics, time
import torch, torch.nn.functional as F
# tools/torch_models.py, beside this script
from torch_models import Generator, LeNet5, ResNet, competition, total_variation, watch_batchnorm


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
    watch_batchnorm(t, stats)
    x = torch.randn(batch, channels, 32, 32, device=dev, requires_grad=True)
    y = torch.arange(batch, device=dev) % 10
    opt = torch.optim.Adam([x], 0.1, betas=(0.5, 0.9))
    def step():
        stats.clear(); opt.zero_grad()
        xj = torch.roll(x, shifts=(1, -1), dims=(2, 3))
        out = t(xj)
        rf = stats[0] * 10 + sum(stats[1:])
        loss = F.cross_entropy(out, y) + 10 * rf + 1e-4 * total_variation(xj) + 1e-5 * xj.norm()
        if student is not None:
            loss = loss + competition(out, student(xj))
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
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: every core, as the engine uses)")
    a = ap.parse_args()
    dev = torch.device(a.device); torch.manual_seed(0)
    # Some builds (Debian's python3-torch) start with one thread; the engine uses every core.
    torch.set_num_threads(a.threads or os.cpu_count())
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
    table = dict(Device=dev.type, Machine=f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads" + (f", {torch.cuda.get_device_name()}" if dev.type == "cuda" else ""),
                 When=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), Rows=rows)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    json.dump(table, open(a.out, "w"), indent=2)
    md = os.path.splitext(a.out)[0] + ".md"
    with open(md, "w") as f:
        f.write(f"Device: {table['Device']}; machine: {table['Machine']}; {table['When']}\n\n")
        f.write("| workload | models | batch | ms/step (median) | images/s | repeats |\n|---|---|---:|---:|---:|---:|\n")
        for r in rows:
            f.write(f"| {r['Workload']} | {r['Model']} | {r['Batch']} | {r['MsPerStep']:.2f} | {r['ImagesPerSecond']:.0f} | {r['Repeats']} |\n")
    print("saved", a.out, "and", md)


if __name__ == "__main__":
    main()
