"""Python/Pillow reference for the augmentation bench (issue 3).

Command (from the repository root, after `cargo bench --bench augment` in the same session):

    python3 -m venv /tmp/pilvenv && /tmp/pilvenv/bin/pip install pillow
    /tmp/pilvenv/bin/python benches/reference/augment_pillow.py --criterion target/criterion

It times, per 256x256 image and single-threaded, the same operations as `benches/augment.rs`,
written the straightforward way a user of the PyTorch re-implementations runs them: PIL crop /
paste / rotate and torchvision's PIL colour-jitter path (ImageEnhance for brightness, contrast and
saturation; HSV round trip for hue), called directly (no torchvision wrapper overhead, so these
numbers are a lower bound for such a pipeline). The translation uses PIL's affine transform with
black fill (what torchvision's RandomAffine does on PIL images), not the Rust reflection padding.

Prints one JSON line: per-case medians in microseconds and, with --criterion, the Rust medians
from criterion's estimates and the ratios python / rust. Sample output:

    {"image": "...", "iters": 400, "python_us": {"cutpaste": 210.3, ...},
     "rust_us": {"cutpaste": 9.1, ...}, "ratio": {"cutpaste": 23.1, ...}}
"""
import argparse
import json
import math
import os
import random
import statistics
import time

from PIL import Image, ImageEnhance

BOTTLE = "../shared/data/mvtec/bottle/train/good/000.png"


def adjust_hue(img, shift):
    """torchvision F.adjust_hue on PIL: HSV round trip, hue channel shifted with uint8 wrap."""
    h, s, v = img.convert("HSV").split()
    delta = int(round(shift * 255)) % 256
    h = h.point([(x + delta) % 256 for x in range(256)])
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def color_jitter(img, rng, b=0.1, c=0.1, s=0.1, h=0.1):
    """torchvision ColorJitter(b, c, s, h): random order, factors U[1-x, 1+x], hue U[-h, h]."""
    order = [0, 1, 2, 3]
    rng.shuffle(order)
    bf, cf, sf = (rng.uniform(max(0.0, 1 - x), 1 + x) for x in (b, c, s))
    hf = rng.uniform(-h, h)
    for op in order:
        if op == 0:
            img = ImageEnhance.Brightness(img).enhance(bf)
        elif op == 1:
            img = ImageEnhance.Contrast(img).enhance(cf)
        elif op == 2:
            img = ImageEnhance.Color(img).enhance(sf)
        else:
            img = adjust_hue(img, hf)
    return img


def cutpaste(img, rng, area=(0.02, 0.15), aspect=(0.3, 1 / 0.3)):
    """CutPaste (Appendix A.2): returns the image and the footprint mask."""
    w_img, h_img = img.size
    target = rng.uniform(*area) * w_img * h_img
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    w = min(max(int(round(math.sqrt(target * ratio))), 1), w_img)
    h = min(max(int(round(math.sqrt(target / ratio))), 1), h_img)
    x, y = rng.randint(0, w_img - w), rng.randint(0, h_img - h)
    patch = color_jitter(img.crop((x, y, x + w, y + h)), rng)
    x2, y2 = rng.randint(0, w_img - w), rng.randint(0, h_img - h)
    out = img.copy()
    out.paste(patch, (x2, y2))
    mask = Image.new("L", img.size, 0)
    mask.paste(255, (x2, y2, x2 + w, y2 + h))
    return out, mask


def scar(img, rng, width=(2, 16), length=(10, 25), rotation=(-45, 45)):
    """CutPaste-Scar: thin patch, jittered, rotated (nearest), pasted with its rotated mask."""
    w_img, h_img = img.size
    w, l = rng.randint(*width), rng.randint(*length)
    x, y = rng.randint(0, w_img - w), rng.randint(0, h_img - l)
    patch = color_jitter(img.crop((x, y, x + w, y + l)), rng).convert("RGBA")
    patch = patch.rotate(rng.uniform(*rotation), expand=True)
    alpha = patch.split()[-1]
    x2, y2 = rng.randint(0, w_img - patch.size[0]), rng.randint(0, h_img - patch.size[1])
    out = img.copy()
    out.paste(patch, (x2, y2), mask=alpha)
    mask = Image.new("L", img.size, 0)
    mask.paste(alpha, (x2, y2))
    return out, mask


def pre_augment(img, rng, translate=0.125):
    """Colour jitter of the whole image, then a random integer translation up to 12.5 %."""
    img = color_jitter(img, rng)
    tx, ty = int(translate * img.size[0]), int(translate * img.size[1])
    dx, dy = rng.randint(-tx, tx), rng.randint(-ty, ty)
    return img.transform(img.size, Image.AFFINE, (1, 0, -dx, 0, 1, -dy), Image.NEAREST)


def three_way(img, rng):
    base = pre_augment(img, rng)
    return [(base, None), cutpaste(base, rng), scar(base, rng)]


def median_us(fn, img, iters):
    times = []
    for i in range(iters):
        rng = random.Random(i)
        t0 = time.perf_counter()
        fn(img, rng)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def rust_medians(root):
    """Criterion medians (ns per iteration) converted to microseconds per image."""
    out = {}
    for case, per_iter in [("cutpaste", 1), ("scar", 1), ("three_way_views", 1),
                           ("batch_three_way_2_threads", 64)]:
        path = os.path.join(root, "augment", case, "new", "estimates.json")
        if os.path.exists(path):
            with open(path) as f:
                out[case] = json.load(f)["median"]["point_estimate"] / 1e3 / per_iter
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default=BOTTLE)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--criterion", help="criterion output folder, e.g. target/criterion")
    args = ap.parse_args()
    if os.path.exists(args.image):
        img = Image.open(args.image).convert("RGB").resize((256, 256), Image.BILINEAR)
    else:
        img = Image.new("RGB", (256, 256))
        img.putdata([(x, y, (x * 7 + y * 13) % 256) for y in range(256) for x in range(256)])
    py = {
        "cutpaste": median_us(cutpaste, img, args.iters),
        "scar": median_us(scar, img, args.iters),
        "three_way_views": median_us(three_way, img, args.iters),
    }
    report = {"image": args.image, "iters": args.iters, "python_us": py}
    if args.criterion:
        rust = rust_medians(args.criterion)
        report["rust_us"] = rust
        report["ratio"] = {k: py[k] / rust[k] for k in py if k in rust}
        if "batch_three_way_2_threads" in rust:
            report["ratio"]["three_way_vs_batch_2_threads"] = (
                py["three_way_views"] / rust["batch_three_way_2_threads"])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
