"""Times ResNet-18's training convolutions one by one: oneDNN's kernels (what libtorch runs)
against the same convolution as matrix products over the whole batch (what
csrc/conv_gemm.cpp does), to pick where src/model/conv_gemm.rs uses the products.

    .venv-ref/bin/python benches/reference/conv_layers.py --size 64 --dtype bf16
    .venv-ref/bin/python benches/reference/conv_layers.py --size 256 --dtype fp32

Prints one line per layer: output positions (Ho x Wo) and the median milliseconds of the forward,
the input gradient and the weight gradient for both, with the products' largest relative
difference from oneDNN's. 96 views (32 images x 3), channels-last, 2 threads by default.
"""
import argparse
import time

import torch
import torch.nn.functional as F


def patches(x, k, stride, pad):
    """[N, C, H, W] channels-last -> [N*Ho*Wo, k*k*C] (patch order kh, kw, c)."""
    n, c, h, w = x.shape
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, pad, pad, pad, pad))  # [N, H+2p, W+2p, C]
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    s = xp.stride()
    v = xp.as_strided((n, ho, wo, k, k, c), (s[0], s[1] * stride, s[2] * stride, s[1], s[2], s[3]))
    return v.reshape(n * ho * wo, k * k * c), ho, wo


def rows(w):
    """[O, C, k, k] -> [O, k*k*C]."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)


def fwd_mm(x, w, k, stride, pad):
    cols, ho, wo = patches(x, k, stride, pad)
    return cols.mm(rows(w).t()).view(x.shape[0], ho, wo, w.shape[0]).permute(0, 3, 1, 2)


def dw_mm(dy, x, k, stride, pad):
    cols, _, _ = patches(x, k, stride, pad)
    g = dy.permute(0, 2, 3, 1).reshape(-1, dy.shape[1]).t().mm(cols)
    return g.view(dy.shape[1], k, k, x.shape[1]).permute(0, 3, 1, 2)


def dx_mm(dy, x, w, k, stride, pad):
    n, c, h, wd = x.shape
    ho, wo = dy.shape[2], dy.shape[3]
    dcols = dy.permute(0, 2, 3, 1).reshape(-1, w.shape[0]).mm(rows(w)).view(n, ho, wo, k, k, c)
    dxp = torch.zeros(n, h + 2 * pad, wd + 2 * pad, c, dtype=torch.float32)
    s = dxp.stride()
    for i in range(k):
        for j in range(k):
            dxp.as_strided((n, ho, wo, c), (s[0], s[1] * stride, s[2] * stride, s[3]),
                           i * s[1] + j * s[2]).add_(dcols[:, :, :, i, j, :])
    return dxp[:, pad:pad + h, pad:pad + wd, :].to(x.dtype).permute(0, 3, 1, 2)


def median_ms(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e3


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64, help="input image size (square)")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    s = a.size // 4  # after the stem
    # (c_in, c_out, input size, stride, kernel): every distinct convolution of layer1-4
    layers = [(64, 64, s, 1, 3), (64, 128, s, 2, 3), (64, 128, s, 2, 1), (128, 128, s // 2, 1, 3),
              (128, 256, s // 2, 2, 3), (128, 256, s // 2, 2, 1), (256, 256, s // 4, 1, 3),
              (256, 512, s // 4, 2, 3), (256, 512, s // 4, 2, 1), (512, 512, s // 8, 1, 3)]
    cl = torch.channels_last
    print(f"{a.size}², {a.dtype}, {a.batch} views, {a.threads} threads; ms, oneDNN -> products")
    for c, o, h, st, k in layers:
        pad = (k - 1) // 2
        x = torch.randn(a.batch, c, h, h).to(dt).contiguous(memory_format=cl)
        w = torch.randn(o, c, k, k).to(dt).contiguous(memory_format=cl)
        y = F.conv2d(x, w, stride=st, padding=pad)
        dy = torch.randn_like(y).contiguous(memory_format=cl)

        def bwd(mask):
            return torch.ops.aten.convolution_backward(dy, x, w, None, [st, st], [pad, pad], [1, 1],
                                                       False, [0, 0], 1, mask)

        t = [median_ms(lambda: F.conv2d(x, w, stride=st, padding=pad), a.reps),
             median_ms(lambda: fwd_mm(x, w, k, st, pad), a.reps),
             median_ms(lambda: bwd([True, False, False]), a.reps),
             median_ms(lambda: dx_mm(dy, x, w, k, st, pad), a.reps),
             median_ms(lambda: bwd([False, True, False]), a.reps),
             median_ms(lambda: dw_mm(dy, x, k, st, pad), a.reps)]
        err = max(rel(fwd_mm(x, w, k, st, pad), y),
                  rel(dx_mm(dy, x, w, k, st, pad), bwd([True, False, False])[0]),
                  rel(dw_mm(dy, x, k, st, pad), bwd([False, True, False])[1]))
        ho = (h + 2 * pad - k) // st + 1
        print(f"{c:>3}->{o:<3} {k}x{k}/{st} out {ho}x{ho} ({ho * ho:>4} positions): "
              f"fwd {t[0]:6.1f} -> {t[1]:6.1f}  dx {t[2]:6.1f} -> {t[3]:6.1f}  "
              f"dW {t[4]:6.1f} -> {t[5]:6.1f}  max rel diff {err:.1e}")


if __name__ == "__main__":
    main()
