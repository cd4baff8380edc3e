"""Minimal safetensors reader/writer in numpy (no `safetensors` package needed).

Format: 8-byte little-endian header length N, then N bytes of JSON
{name: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}, optional "__metadata__": {...}}
(padded with spaces to a multiple of 8), then the raw little-endian data; offsets are relative to the
end of the header.

Supported dtypes: F32, F16, BF16, I32, I64 (plus F64, I8, U8 for convenience).
BF16 has no numpy dtype: it is read into float32 (the 16 bits become the high half of a float32) and
written from float32 by round-to-nearest-even of the low 16 bits (see `f32_to_bf16_bits`).
"""
import json
import struct

import numpy as np

_NP = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "F64": np.dtype("<f8"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
}
_SIZE = {"BF16": 2, **{k: v.itemsize for k, v in _NP.items()}}


def f32_to_bf16_bits(a):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even (NaN kept NaN)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        out[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return out


def bf16_bits_to_f32(b):
    """uint16 bf16 bit patterns -> float32 array."""
    b = np.ascontiguousarray(b, dtype=np.uint16)
    return (b.astype(np.uint32) << 16).view(np.float32)


def round_to_bf16(a):
    """float32 array rounded to the nearest bf16 value, returned as float32."""
    return bf16_bits_to_f32(f32_to_bf16_bits(a)).reshape(np.shape(a))


def _np_dtype_name(arr):
    dt = arr.dtype
    for name, d in _NP.items():
        if dt == d or dt == d.newbyteorder("="):
            return name
    raise ValueError(f"unsupported numpy dtype {dt}")


def save(path, tensors, dtypes=None, metadata=None):
    """Write `tensors` (name -> numpy array) to `path`.

    `dtypes` optionally maps a name to a target dtype string ("F32", "BF16", "F16", "I32", "I64");
    otherwise the dtype follows the array. Tensors are written in the dict's order.
    """
    dtypes = dtypes or {}
    header = {}
    blobs = []
    offset = 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        dt = dtypes.get(name)
        if dt is None:
            dt = _np_dtype_name(arr)
        if dt == "BF16":
            raw = f32_to_bf16_bits(arr.astype(np.float32)).tobytes()
        else:
            raw = np.ascontiguousarray(arr, dtype=_NP[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for raw in blobs:
            f.write(raw)


def load(path, keep_bf16_bits=False):
    """Read `path` -> dict name -> numpy array (BF16 -> float32 unless keep_bf16_bits)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: file too short")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} exceeds file size")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    body = memoryview(data)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        shape = tuple(info["shape"])
        b, e = info["data_offsets"]
        count = int(np.prod(shape)) if shape else 1
        if e - b != count * _SIZE[dt] or e > len(body):
            raise ValueError(f"{path}: tensor {name} has bad data_offsets {b},{e}")
        raw = bytes(body[b:e])
        if dt == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").reshape(shape)
            out[name] = bits.copy() if keep_bf16_bits else bf16_bits_to_f32(bits).reshape(shape)
        else:
            out[name] = np.frombuffer(raw, dtype=_NP[dt]).reshape(shape).copy()
    return out


def header_of(path):
    """The JSON header of a safetensors file (dict)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n).decode("utf-8"))


if __name__ == "__main__":  # self-check
    import os
    import tempfile

    rng = np.random.default_rng(0)
    t = {
        "a": rng.standard_normal((3, 5)).astype(np.float32),
        "b": rng.standard_normal((7,)).astype(np.float16),
        "c": np.arange(6, dtype=np.int32).reshape(2, 3),
        "d": np.arange(4, dtype=np.int64),
        "e": rng.standard_normal((2, 2)).astype(np.float32),
        "s": np.array(3.5, dtype=np.float32),
    }
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.safetensors")
        save(p, t, dtypes={"e": "BF16"})
        r = load(p)
        h = header_of(p)
        assert h["e"]["dtype"] == "BF16"
        for k in t:
            exp = round_to_bf16(t[k]) if k == "e" else t[k]
            assert r[k].dtype == (np.float32 if k == "e" else t[k].dtype), k
            assert r[k].shape == t[k].shape, k
            assert np.array_equal(r[k], exp), k
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
        assert n % 8 == 0
    # bf16 rounding: 1 + 2^-8 is a tie -> even (1.0); 1 + 3*2^-9 rounds up
    assert round_to_bf16(np.array([1 + 2**-8], np.float32))[0] == 1.0
    assert round_to_bf16(np.array([1 + 3 * 2**-9], np.float32))[0] == np.float32(1 + 2**-7)
    print("safetensors_np self-check ok")
