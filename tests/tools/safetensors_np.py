"""Minimal safetensors reader for tests (numpy only)."""
import json
import struct

import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32,
           "I64": np.int64, "U8": np.uint8, "I8": np.int8, "BOOL": np.bool_}


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        begin, end = v["data_offsets"]
        arr = np.frombuffer(data[8 + n + begin:8 + n + end], dtype=_DTYPES[v["dtype"]])
        out[name] = arr.reshape(v["shape"])
    return out
