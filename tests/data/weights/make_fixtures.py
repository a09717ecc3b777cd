#!/usr/bin/env python3
"""Writes the checkpoint fixtures of tests/weights.rs. No torch needed (none is installed here).

torch.save(obj, f) pickles `obj` with a persistent_id hook that replaces every storage by
('storage', torch.<Type>Storage, key, location, numel) and writes a zip of stored (uncompressed)
entries: <folder>/data.pkl, <folder>/byteorder, <folder>/data/<key> (raw little-endian storage
bytes), <folder>/version. Tensors pickle as torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, requires_grad, OrderedDict()). This script registers stand-ins for those names in
sys.modules so Python's own pickle emits the same opcodes and globals, then zips like torch.

Run from anywhere: python3 tests/data/weights/make_fixtures.py [path/to/golden/seed0/meta.json]
The outputs are committed; tests never run Python.
"""
import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))

# --- stand-ins for the torch names a checkpoint refers to -------------------------------------
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
torch._utils = utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils

STORAGE_FORMATS = {  # storage class -> struct format of one element
    "FloatStorage": "f", "DoubleStorage": "d", "HalfStorage": "e", "BFloat16Storage": None,
    "LongStorage": "q", "IntStorage": "i", "ShortStorage": "h", "ByteStorage": "B",
}
for _name in STORAGE_FORMATS:
    setattr(torch, _name, type(_name, (), {"__module__": "torch"}))


def _stand_in(name):
    def f(*args):
        raise RuntimeError("stand-in, never called")
    f.__module__, f.__name__, f.__qualname__ = "torch._utils", name, name
    setattr(utils, name, f)
    return f


_rebuild_tensor_v2 = _stand_in("_rebuild_tensor_v2")
_rebuild_parameter = _stand_in("_rebuild_parameter")


def bf16_bytes(values):
    # bf16 = the top half of the f32 bits (the values used here are exact in bf16).
    return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:] for v in values)


class Storage:
    def __init__(self, kind, values):
        self.kind = kind
        self.numel = len(values)
        fmt = STORAGE_FORMATS[kind]
        self.data = bf16_bytes(values) if fmt is None else struct.pack("<%d%s" % (len(values), fmt), *values)


class Tensor:
    def __init__(self, storage, offset, size, stride=None, parameter=False):
        if stride is None:  # row-major
            stride, acc = [], 1
            for s in reversed(size):
                stride.insert(0, acc)
                acc *= s
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)
        self.parameter = parameter

    def __reduce_ex__(self, protocol):
        if self.parameter:
            plain = Tensor(self.storage, self.offset, self.size, self.stride)
            return (_rebuild_parameter, (plain, True, collections.OrderedDict()))
        return (_rebuild_tensor_v2,
                (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


def tensor(kind, values, size=None):
    return Tensor(Storage(kind, values), 0, size if size is not None else [len(values)])


class TorchPickler(pickle.Pickler):
    def __init__(self, f, protocol):
        super().__init__(f, protocol=protocol)
        self.storages = {}  # id -> (key, storage)

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            key, _ = self.storages.setdefault(id(obj), (str(len(self.storages)), obj))
            return ("storage", getattr(torch, obj.kind), key, "cpu", obj.numel)
        return None


FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def write_zip(path, entries):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr(zipfile.ZipInfo(name, FIXED_TIME), data)
    print("wrote", os.path.relpath(path), os.path.getsize(path), "bytes")


def torch_save(obj, name, folder="archive", protocol=2):
    buf = io.BytesIO()
    p = TorchPickler(buf, protocol)
    p.dump(obj)
    entries = [(f"{folder}/data.pkl", buf.getvalue()), (f"{folder}/byteorder", b"little")]
    for key, st in p.storages.values():
        entries.append((f"{folder}/data/{key}", st.data))
    entries.append((f"{folder}/version", b"3\n"))
    write_zip(os.path.join(HERE, name), entries)


def raw_pickle_zip(name, pkl, folder="archive"):
    write_zip(os.path.join(HERE, name), [(f"{folder}/data.pkl", pkl), (f"{folder}/version", b"3\n")])


# --- fixtures ---------------------------------------------------------------------------------
def bare_v2():
    """A bare state dict covering the tensor layouts and dtypes the reader must handle."""
    a = Storage("FloatStorage", [i * 0.25 - 0.5 for i in range(6)])
    s2 = Storage("FloatStorage", [i * 1.5 for i in range(10)])
    sd = collections.OrderedDict()
    sd["a.weight"] = Tensor(a, 0, [2, 3])                       # contiguous
    sd["a.weight_t"] = Tensor(a, 0, [3, 2], [1, 3])             # transposed view, shared storage
    sd["b.slice"] = Tensor(s2, 1, [2, 2], [4, 1])               # offset + row stride: 1,2,5,6
    sd["c.idx"] = tensor("LongStorage", [-1, 0, 2 ** 40])
    sd["d.scalar"] = Tensor(s2, 7, [], [])                      # 0-d view into a shared storage
    sd["e.half"] = tensor("HalfStorage", [1.0, -2.0, 0.5, 65504.0])
    sd["f.bf16"] = tensor("BFloat16Storage", [1.5, -3.0])
    sd["g.double"] = tensor("DoubleStorage", [0.1, 1e-3])
    sd["h.int32"] = tensor("IntStorage", [7, -9])
    sd["p.param"] = Tensor(Storage("FloatStorage", [3.0, 4.0]), 0, [2], parameter=True)
    sd["x.expand"] = Tensor(Storage("FloatStorage", [1.0, 2.0, 3.0]), 0, [2, 3], [0, 1])
    sd["z.empty"] = Tensor(Storage("FloatStorage", []), 0, [0, 3])
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("a", {"version": 2})])
    torch_save(sd, "bare_v2.pt")


def dataparallel_p4():
    """Protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL) with nn.DataParallel keys."""
    sd = collections.OrderedDict()
    sd["module.conv.weight"] = tensor("FloatStorage", [0.5, -1.0, 2.0, 4.0], [2, 2, 1, 1])
    sd["module.conv.bias"] = tensor("FloatStorage", [0.25, 0.75])
    sd["module.bn.num_batches_tracked"] = tensor("LongStorage", [12], [])
    torch_save(sd, "dataparallel_p4.pt", protocol=4)


def checkpoint_with_optimizer():
    """The official epoch-N.pkl layout: epoch, model_state_dict, optimizer_state_dict."""
    w = Storage("FloatStorage", [1.0, 2.0, 3.0, 4.0])
    model = collections.OrderedDict()
    model["fc.weight"] = Tensor(w, 0, [2, 2])
    model["fc.bias"] = tensor("FloatStorage", [-0.5, 0.5])
    optim = {
        "state": {
            0: {"step": 10, "exp_avg": tensor("FloatStorage", [0.1] * 4, [2, 2]),
                "exp_avg_sq": tensor("FloatStorage", [0.01] * 4, [2, 2])},
            1: {"step": tensor("FloatStorage", [10.0], []),
                "exp_avg": Tensor(w, 2, [2]),  # shares the model's storage
                "exp_avg_sq": tensor("DoubleStorage", [0.0, 0.0])},
        },
        "param_groups": [{
            "lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4,
            "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
            "params": [0, 1], "huge": 2 ** 70, "negative": -5, "name": "backbone",
            "blob": b"\x00\x01", "nested": [[1, (2, 3)], {"k": None}],
        }],
    }
    obj = {"epoch": 19, "model_state_dict": model, "optimizer_state_dict": optim}
    torch_save(obj, "ckpt_epoch19.pkl", folder="epoch-19")


def malicious():
    # GLOBAL os.system + REDUCE: what a booby-trapped checkpoint looks like (written by hand: Python
    # would name the global posix.system).
    cmd = b"touch /tmp/sparsett_pwned"
    pkl = (b"\x80\x02}q\x00X\x08\x00\x00\x00a.weightq\x01cos\nsystem\nq\x02X"
           + struct.pack("<I", len(cmd)) + cmd + b"\x85q\x03Rq\x04s.")
    raw_pickle_zip("malicious_system.pkl", pkl)
    # builtins.eval through STACK_GLOBAL (protocol 4).
    pkl = (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x08builtins\x94\x8c\x04eval\x94\x93"
           b"\x94\x8c\x0b__import__('os')\x94\x85\x94R\x94.")
    raw_pickle_zip("malicious_eval.pkl", pkl)
    # A zip that is not a torch checkpoint.
    write_zip(os.path.join(HERE, "not_torch.zip"), [("notes/readme.txt", b"hello")])


def official_keys(meta_path):
    """tests/data/weights/official_keys.txt: the golden meta.json's 438 keys, shapes, dtypes."""
    out = os.path.join(HERE, "official_keys.txt")
    if meta_path and os.path.exists(meta_path):
        meta = json.load(open(meta_path))
        lines = []
        for e in meta["prng_entries"]:
            lines.append((e["key"], e["shape"], "f32", "prng"))
        for k, shape in meta["explicit_entries"].items():
            lines.append((k, shape, "f32", "explicit"))
        for k, v in meta["derived_entries"].items():
            lines.append((k, v["shape"], {"torch.int64": "i64", "torch.float32": "f32"}[v["dtype"]], "derived"))
        with open(out, "w") as f:
            f.write("# key<TAB>shape<TAB>dtype<TAB>golden kind; from golden seed0/meta.json\n")
            for k, shape, dt, kind in lines:
                f.write(f"{k}\t{','.join(map(str, shape))}\t{dt}\t{kind}\n")
        print("wrote", os.path.relpath(out), len(lines), "keys")
    rows = []
    for line in open(out):
        if line.startswith("#"):
            continue
        k, shape, dt, kind = line.rstrip("\n").split("\t")
        rows.append((k, [int(x) for x in shape.split(",") if x], dt, kind))
    return rows


def schema_stride0(rows):
    """All 438 official entries with their real shapes, written the cheap way: each float
    entry is a zero-stride view of one element of a shared storage (torch.save keeps strides), so
    the file is tiny but loads as a full-size model. Derived buffers hold their real values."""
    vals = Storage("FloatStorage", [0.01 * (i + 1) for i in range(64)])
    w = 7
    rpi = Storage("LongStorage", [((i // w) - (j // w) + 6) * 13 + ((i % w) - (j % w) + 6)
                                  for i in range(49) for j in range(49)])
    ctr = Storage("FloatStorage", [v for i in range(19) for j in range(19) for v in (16.0 * j, 16.0 * i)])
    zero = Storage("LongStorage", [0])
    model = collections.OrderedDict()
    for n, (k, shape, dt, kind) in enumerate(rows):
        if k.endswith("relative_position_index"):
            model[k] = Tensor(rpi, 0, shape)
        elif k.endswith("num_batches_tracked"):
            model[k] = Tensor(zero, 0, [], [])
        elif k == "head.fm_ctr":
            model[k] = Tensor(ctr, 0, shape)
        else:
            model[k] = Tensor(vals, n % 64, shape, [0] * len(shape))
    obj = {"epoch": 19, "model_state_dict": model,
           "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-6, "params": []}]}}
    torch_save(obj, "schema_stride0.pkl", folder="epoch-19")


def mixed_safetensors():
    """A safetensors file written independently of the crate: f16, bf16, f64, i32, f32 entries."""
    tensors = [
        ("h", "F16", [2], struct.pack("<2e", 1.0, -0.5)),
        ("b", "BF16", [2], bf16_bytes([2.0, -0.25])),
        ("d", "F64", [1, 2], struct.pack("<2d", 0.1, 3.0)),
        ("i", "I32", [3], struct.pack("<3i", 1, -2, 3)),
        ("module.f", "F32", [], struct.pack("<f", 1.25)),
    ]
    header, data = {}, b""
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    path = os.path.join(HERE, "mixed_dtypes.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)
    print("wrote", os.path.relpath(path), os.path.getsize(path), "bytes")


if __name__ == "__main__":
    candidates = [os.path.join(HERE, "../golden/seed0/meta.json"),
                  os.path.join(HERE, "../../../../shared/golden/seed0/meta.json")]
    default_meta = next((p for p in candidates if os.path.exists(p)), None)
    rows = official_keys(sys.argv[1] if len(sys.argv) > 1 else default_meta)
    bare_v2()
    dataparallel_p4()
    checkpoint_with_optimizer()
    malicious()
    schema_stride0(rows)
    mixed_safetensors()
