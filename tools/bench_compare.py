#!/usr/bin/env python3
"""Side by side: the engine's bench JSON (`Cluster.Seed bench --out`) against bench_pytorch.py's.

  python3 tools/bench_compare.py TORCHSHARP.json PYTORCH.json [--out FILE.md]

Prints (and saves) one row per workload present in both: ms/step of each and the ratio
TorchSharp / PyTorch (below 1: the engine is faster).
"""
import argparse, json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("torchsharp")
    ap.add_argument("pytorch")
    ap.add_argument("--out")
    a = ap.parse_args()
    ts, pt = json.load(open(a.torchsharp)), json.load(open(a.pytorch))
    key = lambda r: (r["Workload"], r["Model"].replace(" (quick spec)", ""), r["Batch"])
    peer = {key(r): r for r in pt["Rows"]}
    lines = [f"TorchSharp: {ts['Machine']} ({ts['When']}); PyTorch: {pt['Machine']} ({pt['When']}); device {ts['Device']}", "",
             "| workload | models | batch | TorchSharp ms/step | PyTorch ms/step | ratio |", "|---|---|---:|---:|---:|---:|"]
    for r in ts["Rows"]:
        p = peer.get(key(r))
        if p is None:
            continue
        lines.append(f"| {r['Workload']} | {r['Model']} | {r['Batch']} | {r['MsPerStep']:.2f} | {p['MsPerStep']:.2f} | {r['MsPerStep'] / p['MsPerStep']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if a.out:
        open(a.out, "w").write(text)


if __name__ == "__main__":
    main()
