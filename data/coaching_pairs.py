#!/usr/bin/env python3
"""Builds data/coaching-pairs.jsonl from data/coaching-groups.txt.

For each group: the base question with each paraphrase, the paraphrases with each other
(same: true, kind "paraphrase"), and the base question with each look-alike (same: false,
kind = how it differs). Every pair carries its group number, so data/split.py keeps a
group whole in one half.
"""
import json, sys

groups, cur = [], None
for line in open("data/coaching-groups.txt", encoding="utf-8"):
    line = line.rstrip("\n")
    if not line or line.startswith("#"):
        continue
    if line.startswith("Q "):
        cur = {"q": line[2:], "para": [], "diff": []}
        groups.append(cur)
    elif line.startswith("= "):
        cur["para"].append(line[2:])
    elif line.startswith("~"):
        kind, text = line[1:].split(" ", 1)
        cur["diff"].append((kind, text))
    else:
        sys.exit(f"bad line: {line}")
out = open("data/coaching-pairs.jsonl", "w", encoding="utf-8")
n = 0
for g, grp in enumerate(groups, 1):
    rows = [(grp["q"], p, True, "paraphrase") for p in grp["para"]]
    rows += [
        (a, b, True, "paraphrase")
        for i, a in enumerate(grp["para"])
        for b in grp["para"][i + 1 :]
    ]
    rows += [(grp["q"], t, False, k) for k, t in grp["diff"]]
    for a, b, same, kind in rows:
        out.write(json.dumps({"a": a, "b": b, "same": same, "kind": kind, "group": g}, ensure_ascii=False) + "\n")
        n += 1
print(f"{len(groups)} groups, {n} pairs")
