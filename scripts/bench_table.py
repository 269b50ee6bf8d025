"""Markdown table of the runs listed by scripts/benchmark.sh (one `dataset run-folder` per line).

Reads each run's eval/report.json (metrics, per-sample scores, stored threshold), time.txt
(GNU time -v: wall clock and peak RSS of `cutpaste train`) and train.log (recipe and steps), and
prints one row per dataset with mean ± standard error over its seeds.
"""
import json
import math
import pathlib
import re
import sys


def mean_se(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def fmt(values, scale=100.0, digits=1):
    m, se = mean_se([None if v is None else scale * v for v in values])
    if m is None:
        return "—"
    return f"{m:.{digits}f}" if se is None else f"{m:.{digits}f} ± {se:.{digits}f}"


def wall_and_rss(run):
    text = (run / "time.txt").read_text()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    h, m, s = wall.groups()
    seconds = int(h or 0) * 3600 + int(m) * 60 + float(s)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return seconds, rss_kb / 1024.0 / 1024.0


def misclassified(report):
    t = report.get("threshold")
    if t is None:
        return None
    wrong = sum((s["score"] > t) != s["anomalous"] for s in report["samples"])
    return wrong, len(report["samples"])


def recipe(run):
    log = (run / "train.log").read_text()
    first = re.search(r"\((\d+) held out.*?; (\w+) recipe", log)
    steps = re.findall(r"^(\w+): (\d+) steps in", log, re.M)
    kind = first.group(2).lower() if first else "?"
    return kind, ", ".join(f"{n} {s} steps" for n, s in steps)


def main():
    listing, budget, tag, train_args = sys.argv[1:5]
    rows = {}
    for line in pathlib.Path(listing).read_text().splitlines():
        name, run = line.split(" ", 1)
        rows.setdefault(name, []).append(pathlib.Path(run))
    print(f"\nBudget {budget} per run, tag `{tag}`, extra train options `{train_args or 'none'}`\n")
    print("| dataset | seeds | image AUROC | pixel AUROC | AUPRO | misclassified at threshold "
          "| train wall s | peak RSS GB | recipe (steps per seed) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, runs in rows.items():
        reps = [json.loads((r / "eval" / "report.json").read_text()) for r in runs]
        walls, rss = zip(*(wall_and_rss(r) for r in runs))
        wrong = [misclassified(r) for r in reps]
        wrong_txt = ", ".join("—" if w is None else f"{w[0]}/{w[1]}" for w in wrong)
        kinds = [recipe(r) for r in runs]
        print(
            f"| {name} | {len(runs)} | {fmt([r['image_auroc'] for r in reps])} "
            f"| {fmt([r.get('pixel_auroc') for r in reps])} | {fmt([r.get('aupro') for r in reps])} "
            f"| {wrong_txt} | {fmt(walls, 1.0, 0)} | {fmt(rss, 1.0, 2)} "
            f"| {kinds[0][0]}: {'; '.join(k[1] for k in kinds)} |"
        )


if __name__ == "__main__":
    main()
