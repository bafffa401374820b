#!/usr/bin/env python3
"""Builds the "related but different" coaching slice: questions from *different* groups
of the same half (so the tune/test split is kept), paired with their nearest neighbours.

Every question (base or paraphrase) of a half is paired with every question of the other
groups of that half; the pairs are scored with all-MiniLM-L6-v2 (score_pairs --verbose)
and, for each question, its two most similar questions from other groups with cosine >= 0.5
are kept (hard negatives, mined the way GPTCache's benchmark mines them).

    cargo build --release --all-features --example score_pairs
    python3 data/coaching_related.py target/release/examples/score_pairs target/models/minilm
"""
import json, subprocess, sys

exe, model = sys.argv[1], sys.argv[2]
for half in ("tune", "test"):
    qs = {}
    for line in open(f"data/coaching-pairs-{half}.jsonl", encoding="utf-8"):
        p = json.loads(line)
        if p["same"]:
            qs.setdefault(p["group"], set()).update([p["a"], p["b"]])
    items = sorted((g, q) for g, s in qs.items() for q in s)
    cand = [(i, j) for i in range(len(items)) for j in range(i + 1, len(items)) if items[i][0] != items[j][0]]
    inp = "".join(json.dumps({"a": items[i][1], "b": items[j][1]}) + "\n" for i, j in cand)
    out = subprocess.run([exe, "--embedder", "minilm", "--model-dir", model, "--verbose"],
                         input=inp, capture_output=True, text=True, check=True).stdout.splitlines()
    sims = [float(l.split("\t")[1]) for l in out]
    best = {}
    for (i, j), s in zip(cand, sims):
        for k in (i, j):
            best.setdefault(k, []).append((s, i, j))
    keep = set()
    for k, lst in best.items():
        for s, i, j in sorted(lst, reverse=True)[:2]:
            if s >= 0.5:
                keep.add((i, j))
    with open(f"data/coaching-related-{half}.jsonl", "w", encoding="utf-8") as f:
        for i, j in sorted(keep):
            f.write(json.dumps({"a": items[i][1], "b": items[j][1], "same": False, "kind": "related",
                                "group": f"{items[i][0]}-{items[j][0]}"}, ensure_ascii=False) + "\n")
    print(half, len(items), "questions,", len(keep), "related pairs")
