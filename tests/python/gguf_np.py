"""Minimal GGUF (version 3) reader in numpy, for tests only: written from the format's documentation
(ggml's docs/gguf.md), independently of moepp's C++ writer, so that the tests check the writer's bytes
against the format rather than against itself.

Layout: magic b"GGUF", u32 version, u64 tensor count, u64 metadata count; the metadata pairs (string key,
u32 value type, value; arrays: u32 element type, u64 count, elements; strings: u64 length + bytes);
the tensor infos (string name, u32 n_dims, u64 dims in ggml order (fastest first), u32 ggml type,
u64 offset relative to the data section); padding to general.alignment (default 32); the data section.
All little-endian.

read(path) -> Gguf with .version, .kv {key: value}, .kv_types {key: type id, or ("array", element
type id)}, .tensors {name: TensorInfo}, .data_start, .alignment, .file_size, and .array(name) (the
tensor as a numpy array of shape reversed(dims), i.e. row-major; F32 and BF16 (as float32) only).
"""
import struct

import numpy as np

TYPE_NAMES = {0: "U8", 1: "I8", 2: "U16", 3: "I16", 4: "U32", 5: "I32", 6: "F32", 7: "BOOL", 8: "STRING",
              9: "ARRAY", 10: "U64", 11: "I64", 12: "F64"}
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30


class TensorInfo:
    def __init__(self, name, dims, ggml_type, offset):
        self.name, self.dims, self.ggml_type, self.offset = name, dims, ggml_type, offset

    @property
    def shape(self):  # row-major
        return tuple(reversed(self.dims))

    @property
    def nbytes(self):
        n = int(np.prod(self.dims))
        return n * {GGML_F32: 4, GGML_F16: 2, GGML_BF16: 2}[self.ggml_type]


class Gguf:
    pass


class _Cursor:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = bytes(self.buf[self.pos:self.pos + n])
        if len(s) != n:
            raise ValueError("truncated string")
        self.pos += n
        return s.decode("utf-8")

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et = self.take("<I")
            n = self.take("<Q")
            return et, [self.value(et) for _ in range(n)]
        if t not in _SCALAR:
            raise ValueError(f"unknown value type {t}")
        return self.take(_SCALAR[t])


def read(path):
    with open(path, "rb") as f:
        buf = f.read()
    g = Gguf()
    g.file_size = len(buf)
    c = _Cursor(memoryview(buf))
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError("bad magic")
    c.pos = 4
    g.version = c.take("<I")
    n_tensors = c.take("<Q")
    n_kv = c.take("<Q")
    g.kv, g.kv_types = {}, {}
    for _ in range(n_kv):
        key = c.string()
        t = c.take("<I")
        v = c.value(t)
        if key in g.kv:
            raise ValueError(f"duplicate key {key}")
        if t == 9:
            g.kv_types[key] = ("array", v[0])
            g.kv[key] = v[1]
        else:
            g.kv_types[key] = t
            g.kv[key] = v
    g.tensors = {}
    g.order = []
    for _ in range(n_tensors):
        name = c.string()
        nd = c.take("<I")
        dims = [c.take("<Q") for _ in range(nd)]
        tt = c.take("<I")
        off = c.take("<Q")
        g.tensors[name] = TensorInfo(name, dims, tt, off)
        g.order.append(name)
    g.alignment = g.kv.get("general.alignment", 32)
    g.header_end = c.pos
    g.data_start = (c.pos + g.alignment - 1) // g.alignment * g.alignment
    g._buf = buf
    return g


def array(g, name):
    """The tensor `name` of a read Gguf as a row-major float32 numpy array."""
    t = g.tensors[name]
    start = g.data_start + t.offset
    raw = g._buf[start:start + t.nbytes]
    if len(raw) != t.nbytes:
        raise ValueError(f"tensor {name} runs past the end of the file")
    if t.ggml_type == GGML_F32:
        a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif t.ggml_type == GGML_BF16:
        a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif t.ggml_type == GGML_F16:
        a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    else:
        raise ValueError(f"tensor {name}: ggml type {t.ggml_type} not supported by this reader")
    return a.reshape(t.shape)
