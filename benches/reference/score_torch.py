"""PyTorch reference for benches/score.rs: end-to-end scoring of image files, the usual way.

The same job as `Detector::score_files` (decode, resize, forward, density), done as public
CutPaste re-implementations do it: torchvision resnet18 (fc removed) + the same MLP head as
`HeadConfig::paper()` (Linear(512,512,no bias)+BN+ReLU, Linear(512,128), Linear(128,3)) in eval
mode; a `Dataset` + `DataLoader` over the image files with PIL decode, `Resize((S,S))`,
`ToTensor` and ImageNet `Normalize`, batches of 32 (`cutpaste::detector::SCORE_BATCH`); forward
under `torch.inference_mode()`; the density feature is the backbone's pooled 512-d output (what
ours fits its density on), L2-normalised; the score is its squared Mahalanobis distance to a
Gaussian (mean + Ledoit-Wolf covariance) fitted beforehand, not timed, on the embeddings of up to
`--fit-images` training images (random vectors when the training folder has none). The weights
are random: only the time matters.

A warm-up pass over the first `--warmup` images, then `--reps` timed passes over all of them;
throughput = images / wall time of a pass (data loading included), median over passes. It is
measured with DataLoader `num_workers` 0 and 1; the faster is reported as the reference's best,
with both in `by_workers`. Prints one JSON line.

    .venv-ref/bin/python benches/reference/score_torch.py --size 256 --threads 2 --reps 3
    .venv-ref/bin/python benches/reference/score_torch.py --size 128 --channels-last \
        --dir ../shared/data/mvtec/bottle/test/broken_large

`--bf16` runs the forward under CPU autocast to bfloat16 (the features are cast back to fp32
before the density), PyTorch's fastest path on CPUs with AMX.

Needs torch 2.11 and torchvision 0.26 with pillow and numpy.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torchvision
from PIL import Image
from torchvision import transforms

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# cutpaste::data::IMAGE_EXTENSIONS
EXTENSIONS = {"png", "jpg", "jpeg", "bmp", "tif", "tiff", "gif", "webp", "pnm", "ppm", "pgm"}


def list_images(folder):
    """Image files under `folder`, recursively, sorted per folder (hidden files skipped)."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        out += [os.path.join(root, f) for f in sorted(files)
                if not f.startswith(".") and f.rsplit(".", 1)[-1].lower() in EXTENSIONS]
    return out


class Files(torch.utils.data.Dataset):
    def __init__(self, paths, size):
        self.paths = paths
        self.transform = transforms.Compose([
            transforms.Resize((size, size)), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, idx):
        return self.transform(Image.open(self.paths[idx]).convert("RGB"))


class CutPasteNet(torch.nn.Module):
    """resnet18 without fc + the projection head; returns (pooled 512-d features, logits)."""

    def __init__(self):
        super().__init__()
        self.backbone = torchvision.models.resnet18(weights=None)
        self.backbone.fc = torch.nn.Identity()
        self.head = torch.nn.Sequential(
            torch.nn.Linear(512, 512, bias=False), torch.nn.BatchNorm1d(512), torch.nn.ReLU(),
            torch.nn.Linear(512, 128), torch.nn.Linear(128, 3))

    def forward(self, x):
        features = self.backbone(x)
        return features, self.head(features)


def loader(paths, a, workers):
    return torch.utils.data.DataLoader(Files(paths, a.size), batch_size=a.batch, shuffle=False,
                                       num_workers=workers)


def embed(model, batches, fmt, bf16=False):
    with torch.inference_mode():
        for x in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                features, _logits = model(x.contiguous(memory_format=fmt))
            yield torch.nn.functional.normalize(features.float(), p=2, dim=1)


def ledoit_wolf(x):
    """Ledoit-Wolf shrunk covariance of the rows of `x` (as sklearn's estimator)."""
    n, p = x.shape
    xc = x - x.mean(0)
    s = xc.T @ xc / n
    mu = torch.trace(s) / p
    delta = ((s - mu * torch.eye(p, dtype=x.dtype)) ** 2).sum() / p
    sq = (xc ** 2).sum(1)
    # sum_k ||x_k x_k^T - S||_F^2 = sum_k ||x_k||^4 - 2 x_k^T S x_k + ||S||_F^2
    beta = ((sq ** 2).sum() - 2 * ((xc @ s) * xc).sum() + n * (s ** 2).sum()) / (n * n * p)
    shrink = 0.0 if delta == 0 else float(min(beta, delta) / delta)
    return (1 - shrink) * s + shrink * mu * torch.eye(p, dtype=x.dtype)


def fit_gaussian(model, a, fmt):
    """(mean, precision) fitted on the training embeddings; not timed."""
    paths = list_images(a.train)[: a.fit_images] if os.path.isdir(a.train) else []
    if len(paths) >= 2:
        x = torch.cat(list(embed(model, loader(paths, a, 0), fmt, a.bf16))).double()
    else:
        x = torch.nn.functional.normalize(torch.randn(max(a.fit_images, 2), 512, dtype=torch.float64), dim=1)
    mean = x.mean(0)
    precision = torch.linalg.inv(ledoit_wolf(x))
    return mean.float(), precision.float(), len(paths) if len(paths) >= 2 else 0


def score_pass(model, batches, fmt, mean, precision, bf16=False):
    scores = []
    for f in embed(model, batches, fmt, bf16):
        d = f - mean
        scores.append(((d @ precision) * d).sum(1))
    return torch.cat(scores)


def measure(model, paths, a, fmt, gauss, workers):
    """images/s and ms/image medians over `reps` timed passes with `workers` loader workers."""
    score_pass(model, loader(paths[: a.warmup], a, workers), fmt, *gauss, a.bf16)
    ips, ms = [], []
    for rep in range(a.reps):
        t = time.perf_counter()
        scores = score_pass(model, loader(paths, a, workers), fmt, *gauss, a.bf16)
        dt = time.perf_counter() - t
        assert scores.shape[0] == len(paths) and bool(torch.isfinite(scores).all())
        ips.append(len(paths) / dt)
        ms.append(1e3 * dt / len(paths))
        print(f"  ref pass {rep + 1} workers {workers}: {ips[-1]:.1f} img/s", file=sys.stderr)
    return {"images_per_sec_median": statistics.median(ips), "ms_per_image_median": statistics.median(ms)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="forward under CPU autocast to bfloat16")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=32, help="images of the warm-up pass")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dir", default="../shared/data/mvtec/bottle/test")
    ap.add_argument("--train", default="../shared/data/mvtec/bottle/train/good")
    ap.add_argument("--fit-images", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    paths = list_images(a.dir)
    if not paths:
        raise SystemExit(f"no images under {a.dir}")
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = CutPasteNet().to(memory_format=fmt).eval()
    *gauss, fitted_on = fit_gaussian(model, a, fmt)
    by_workers = {w: measure(model, paths, a, fmt, gauss, w) for w in (0, 1)}
    best = max(by_workers, key=lambda w: by_workers[w]["images_per_sec_median"])
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({
        "impl": "pytorch", "size": a.size, "threads": a.threads, "channels_last": a.channels_last,
        "precision": "Bf16" if a.bf16 else "Fp32",
        "batch": a.batch, "n_images": len(paths), "warmup": min(a.warmup, len(paths)), "reps": a.reps,
        "workers": best, **by_workers[best], "by_workers": {str(w): v for w, v in by_workers.items()},
        "peak_rss_mib": (self_kb + child_kb) / 1024, "self_peak_rss_mib": self_kb / 1024,
        "worker_peak_rss_mib": child_kb / 1024, "fit_images": fitted_on,
        "torch": torch.__version__, "loadavg": open("/proc/loadavg").read().strip(),
    }))


if __name__ == "__main__":
    main()
