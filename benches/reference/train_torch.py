"""PyTorch reference for benches/train.rs: the same network, batch and toy task, the usual way.

torchvision resnet18 (fc removed) + the same MLP head (Linear(512,512,no bias)+BN+ReLU,
Linear(512,128), Linear(128,3)), SGD(lr 0.03, momentum 0.9, weight decay 3e-5) with
CosineAnnealingLR(65536), batches of 32 (--batch-images) source images x 3 views from a standard DataLoader
whose Dataset does the toy cut-paste with PIL (the same task as cutpaste::model::ToySource: view 0
the image, view 1 a 2-15 % rectangle cut and pasted elsewhere, view 2 a 2-16 x 10-25 px strip cut
and pasted elsewhere), images resized once up front as the public re-implementations do.
Throughput = views / wall time of a step, data loading included; median over the timed steps.
Prints one JSON line.

    .venv-ref/bin/python benches/reference/train_torch.py --size 256 --steps 5 --warmup 2 --threads 2
    .venv-ref/bin/python benches/reference/train_torch.py --size 128 --channels-last

Needs torch 2.11 with its CUDA runtime libraries (the plain `pip install torch==2.11.0`),
torchvision 0.26.0, pillow and numpy: `bash benches/reference/setup.sh` puts them in `.venv-ref`.
"""
import argparse
import json
import math
import os
import random
import resource
import time

import torch
import torchvision
from PIL import Image
from torchvision import transforms

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def cut_paste(img, rng, scar):
    w, h = img.size
    if scar:
        a, b = rng.randint(2, 16), rng.randint(10, 25)
        pw, ph = (a, b) if rng.random() < 0.5 else (b, a)
    else:
        area = rng.uniform(0.02, 0.15) * w * h
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        pw, ph = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    pw, ph = min(max(pw, 1), w - 1), min(max(ph, 1), h - 1)
    sx, sy = rng.randint(0, w - pw), rng.randint(0, h - ph)
    dx, dy = rng.randint(0, w - pw), rng.randint(0, h - ph)
    out = img.copy()
    out.paste(img.crop((sx, sy, sx + pw, sy + ph)), (dx, dy))
    return out


class ToyThreeWay(torch.utils.data.Dataset):
    def __init__(self, folder, size, length):
        files = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        self.images = [Image.open(os.path.join(folder, f)).convert("RGB").resize((size, size), Image.BILINEAR)
                       for f in files]
        self.data = "bottle"
        if not self.images:
            g = torch.Generator().manual_seed(0)
            self.images = [transforms.functional.to_pil_image(torch.rand(3, size, size, generator=g))
                           for _ in range(64)]
            self.data = "synthetic"
        self.length = length
        self.to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self):
        return self.length

    def __getitem__(self, idx):
        rng = random.Random(idx)
        img = self.images[rng.randrange(len(self.images))]
        views = [img, cut_paste(img, rng, False), cut_paste(img, rng, True)]
        return torch.stack([self.to_tensor(v) for v in views]), torch.tensor([0, 1, 2])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-images", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--data", default="../shared/data/mvtec/bottle/train/good")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    total = a.warmup + a.steps
    ds = ToyThreeWay(a.data, a.size, a.batch_images * total)
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch_images, shuffle=False, num_workers=a.workers,
                                         drop_last=True, persistent_workers=False)
    backbone = torchvision.models.resnet18(weights=None)
    backbone.fc = torch.nn.Identity()
    head = torch.nn.Sequential(torch.nn.Linear(512, 512, bias=False), torch.nn.BatchNorm1d(512),
                               torch.nn.ReLU(), torch.nn.Linear(512, 128), torch.nn.Linear(128, 3))
    model = torch.nn.Sequential(backbone, head)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=3e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=65536)
    loss_fn = torch.nn.CrossEntropyLoss()
    times, losses = [], []
    t = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        x = x.flatten(0, 1).contiguous(memory_format=fmt)  # [B, 3 views, 3, H, W] -> [3B, 3, H, W]
        y = y.flatten()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        now = time.perf_counter()
        times.append(now - t)
        t = now
        print(f"  ref step {step + 1} loss {losses[-1]:.4f} {times[-1]:.2f}s", file=os.sys.stderr)
        if step + 1 >= total:
            break
    timed = sorted(times[a.warmup:])
    med = timed[len(timed) // 2] if len(timed) % 2 else 0.5 * (timed[len(timed) // 2 - 1] + timed[len(timed) // 2])
    ips = sorted(3 * a.batch_images / s for s in times[a.warmup:])
    ips_med = ips[len(ips) // 2] if len(ips) % 2 else 0.5 * (ips[len(ips) // 2 - 1] + ips[len(ips) // 2])
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del loader
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({
        "impl": "pytorch", "size": a.size, "precision": "Bf16" if a.bf16 else "Fp32",
        "channels_last": a.channels_last, "batch": 3 * a.batch_images, "threads": a.threads, "workers": a.workers,
        "warmup": a.warmup, "steps": len(timed), "images_per_sec_median": ips_med,
        "step_seconds_median": med, "peak_rss_mib": self_kb / 1024,
        "worker_peak_rss_mib": child_kb / 1024, "data": ds.data, "losses": losses,
        "torch": torch.__version__, "loadavg": open("/proc/loadavg").read().strip(),
    }))


if __name__ == "__main__":
    main()
