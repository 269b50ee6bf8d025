"""Copies a cutpaste checkpoint with another fast path recorded in its metadata.

The detector's checkpoint stores the fast path it was trained on (`FastPath`: precision and
layout), and `Detector::load` scores with it. Changing the record changes how the same weights
compute their features (e.g. fp32 features from a model trained in bf16), which is what
`REFIT=1 REFIT_POOLED=1 examples/pooled_vs_map` needs to compare feature precisions on one model.

    python3 scripts/set_fast_path.py IN.safetensors OUT.safetensors Fp32|Bf16 [--nchw]
"""
import json
import struct
import sys


def main():
    if len(sys.argv) not in (4, 5) or sys.argv[3] not in ("Fp32", "Bf16"):
        raise SystemExit(__doc__)
    src, dst, precision = sys.argv[1:4]
    fast = {"precision": precision, "channels_last": "--nchw" not in sys.argv[4:]}
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header["__metadata__"]
    params = json.loads(meta["params"])
    params["fast_path"] = fast
    params["params"]["fast_path"] = fast
    meta["params"] = json.dumps(params)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.write(data)


if __name__ == "__main__":
    main()
