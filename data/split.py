#!/usr/bin/env python3
"""Splits a pair file into tune and test halves, once, deterministically.

A pair goes to the test half when the first byte of SHA-256 of its group key is odd.
The group key is the pair's "group" field when it has one (the coaching set: every pair
built from one base question shares it, so no question is seen in both halves), else
its "a" text (the dev pairs: the mined look-alikes share their "a" sentence).

    python3 data/split.py data/semantic-pairs-dev.jsonl   # writes ...-tune / ...-test
"""
import hashlib, json, sys

src = sys.argv[1]
stem = src[: -len(".jsonl")]
tune, test = open(stem + "-tune.jsonl", "w"), open(stem + "-test.jsonl", "w")
n = {"tune": 0, "test": 0}
for line in open(src, encoding="utf-8"):
    if not line.strip():
        continue
    p = json.loads(line)
    key = str(p.get("group", p["a"])).encode("utf-8")
    half = "test" if hashlib.sha256(key).digest()[0] % 2 else "tune"
    (test if half == "test" else tune).write(line if line.endswith("\n") else line + "\n")
    n[half] += 1
print(f"{src}: {n['tune']} tune, {n['test']} test")
