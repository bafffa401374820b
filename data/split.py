#!/usr/bin/env python3
"""Splits a pair file into tune and test halves, once, deterministically.

A pair goes to the test half when the first byte of SHA-256 of its group key is odd.
The group key is the pair's "group" field when it has one (the coaching set: every pair
built from one base question shares it, so no question is seen in both halves), else
its "a" text (the dev pairs: the mined look-alikes share their "a" sentence).

    python3 data/split.py data/semantic-pairs-dev.jsonl   # writes ...-tune / ...-test

Grouping by the "a" text alone was not enough for the dev pairs: a sentence can be the
"b" of one pair and the "a" of another, and 155 of the 664 test pairs (118 of its 162
look-alikes) shared a sentence with the tune half. So after the split, a test pair that
shares a normalised sentence (lower case, words only) with any tune pair is dropped:
the tune half is left exactly as it was tuned on, and the test half holds only
sentences never seen in tuning. `python3 data/split.py --clean STEM` applies that step
alone to existing halves.
"""
import hashlib, json, re, sys


def norm(text):
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def clean(stem):
    """Drops the test pairs that share a sentence with the tune half."""
    seen = set()
    for line in open(stem + "-tune.jsonl", encoding="utf-8"):
        if line.strip():
            p = json.loads(line)
            seen.update((norm(p["a"]), norm(p["b"])))
    kept, dropped = [], 0
    for line in open(stem + "-test.jsonl", encoding="utf-8"):
        if not line.strip():
            continue
        p = json.loads(line)
        if norm(p["a"]) in seen or norm(p["b"]) in seen:
            dropped += 1
        else:
            kept.append(line if line.endswith("\n") else line + "\n")
    open(stem + "-test.jsonl", "w", encoding="utf-8").writelines(kept)
    print(f"{stem}-test: {len(kept)} kept, {dropped} dropped for sharing a sentence with tune")


if sys.argv[1] == "--clean":
    clean(sys.argv[2])
    sys.exit(0)

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
tune.close()
test.close()
clean(stem)
