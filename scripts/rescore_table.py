#!/usr/bin/env python3
"""The table of docs/results.md, "Patch covariance and the combined image score".

Reads, per set and seed, the benchmark's eval report (out/bench/final/<set>-sS/eval/report.md:
the scores before the localizer fix) and the dumps and outputs of examples/pooled_vs_map.rs run
with REFIT=1 PIXEL=1 and LOC_COV=full (into out/refit/) or LOC_COV=diagonal (out/refit_diag/).
The combined image score is recomputed from the dumped scores as ImageScore::Combined defines it:
z(map; kept training images' map scores) + min(1, n_kept / 512) * z(pooled; their 5-fold
cross-validated pooled scores). Prints one Markdown row per set, mean ± s.e. over the seeds found.

    .venv/bin/python scripts/rescore_table.py     # numpy comes with the torch wheel in .venv
"""
import json
import os
import re

import numpy as np

SETS = ["mvtec_bottle", "mpdd_metal_plate", "bsdata_ball_screw", "elpv_mono",
        "synthetic_synthetic_part"]
POOLED_DIM = 512


def auc(scores, labels):
    """ROC AUC in %, ties given their average rank (Mann-Whitney)."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    order = np.argsort(s, kind="mergesort")
    ranks, i = np.empty(len(s)), 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[order[j + 1]] == s[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos, neg = y.sum(), len(y) - y.sum()
    return (ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg) * 100


def z(v, ref):
    ref = np.asarray(ref, float)
    return (np.asarray(v, float) - ref.mean()) / max(ref.std(), 1e-12)


def combined(d):
    w = min(1.0, (d["n_train"] - len(d["held_map"])) / POOLED_DIM)
    return auc(z(d["map"], d["kept_map"]) + w * z(d["pooled"], d["cv_pooled"]), d["labels"])


def pixel(err_path):
    m = re.search(r'"pixel_auroc":(?:Some\()?([\d.]+|None)\)?,"aupro":(?:Some\()?([\d.]+|None)',
                  open(err_path).read())
    return [None if x == "None" else float(x) for x in m.groups()] if m else [None, None]


def before(tag):
    rep = open(f"out/bench/final/{tag}/eval/report.md").read()

    def get(k):
        m = re.search(r"\| " + k + r"[^|]*\| ([\d.]+)", rep)
        return float(m.group(1)) if m else None
    return get("image AUROC"), get("pixel AUROC"), get("AUPRO")


def mean_se(v):
    v = [x for x in v if x is not None]
    if not v:
        return "—"
    se = np.std(v, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
    return f"{np.mean(v):.1f} ± {se:.1f}"


def main():
    print("| dataset | image: before | map, full | map, diagonal | combined, diagonal | "
          "combined, full | pixel: before | full | diagonal | AUPRO: before | full | diagonal |")
    print("|" + "---|" * 12)
    for name in SETS:
        cols = [[] for _ in range(11)]
        for seed in range(3):
            tag = f"{name}-s{seed}"
            full, diag = f"out/refit/{tag}", f"out/refit_diag/{tag}"
            if not (os.path.exists(full + ".json") and os.path.exists(diag + ".json")):
                continue
            f, d = json.load(open(full + ".json")), json.load(open(diag + ".json"))
            b = before(tag)
            pf, pd = pixel(full + ".err"), pixel(diag + ".err")
            row = [b[0], auc(f["map"], f["labels"]), auc(d["map"], d["labels"]), combined(d),
                   combined(f), b[1], pf[0], pd[0], b[2], pf[1], pd[1]]
            for c, v in zip(cols, row):
                c.append(v)
        print(f"| {name} | " + " | ".join(mean_se(c) for c in cols) + " |")


if __name__ == "__main__":
    main()
