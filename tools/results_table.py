#!/usr/bin/env python3
"""Tabulates runs/*/result.json as the Markdown table used in docs/results.md.

  python3 tools/results_table.py runs/res-*
"""
import json, sys, os

print("| run | method | dataset | teacher | teacher acc. | student | student acc. | student alone (baseline) | steps | wall s | device |")
print("|---|---|---|---|---:|---|---:|---:|---:|---:|---|")
for d in sys.argv[1:]:
    p = os.path.join(d, "result.json")
    if not os.path.exists(p):
        continue
    r = json.load(open(p))
    f = lambda v: "-" if v is None else f"{v:.2f}"
    print(f"| {r['name']} | {r['method']} | {r['dataset']} | {r.get('teacher_arch') or '-'} | {f(r.get('teacher_accuracy'))} | "
          f"{r['student_arch']} | {f(r['student_accuracy'])} | {f(r.get('baseline_accuracy'))} | {r['steps']} | {r['wall_seconds']} | {r['device']} |")
