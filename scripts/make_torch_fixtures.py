#!/usr/bin/env python3
"""Writes the PyTorch / pickle-safety fixtures under Tests/Fixtures/torch/ (deterministic).

Benign checkpoints are written by real torch.save; reference values go to <name>.ref.npz (float32, C order,
one entry per tensor name) so Swift tests compare bit for bit. Malicious pickles are built with pickle.dumps of
objects whose __reduce__ names a dangerous callable (harmless string payloads) or with hand-assembled opcodes.
NOTHING here ever unpickles them.
"""
import io
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "torch")
OUT = os.path.normpath(OUT)
os.makedirs(OUT, exist_ok=True)


def path(name):
    return os.path.join(OUT, name)


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)


def fix_serialization_id(p):
    """torch writes a random .data/serialization_id: replace it with zeros (and fix its CRCs) for determinism."""
    data = bytearray(open(p, "rb").read())
    z = zipfile.ZipFile(p)
    infos = [i for i in z.infolist() if i.filename.endswith(".data/serialization_id")]
    for info in infos:
        old = z.read(info.filename)
        new = b"0" * len(old)
        crc = struct.pack("<I", zlib.crc32(new))
        h = info.header_offset
        n, x = struct.unpack("<HH", data[h + 26:h + 30])
        start = h + 30 + n + x
        assert info.compress_type == 0
        data[start:start + len(old)] = new
        data[h + 14:h + 18] = crc
        if info.flag_bits & 8:
            d = start + len(old)
            off = d + 4 if data[d:d + 4] == b"PK\x07\x08" else d
            data[off:off + 4] = crc
        pos = 0
        while True:
            pos = data.find(b"PK\x01\x02", pos)
            if pos < 0:
                break
            nl = struct.unpack("<H", data[pos + 28:pos + 30])[0]
            if bytes(data[pos + 46:pos + 46 + nl]).decode() == info.filename:
                data[pos + 16:pos + 20] = crc
            pos += 4
    z.close()
    open(p, "wb").write(bytes(data))


def save_torch(obj, name):
    torch.save(obj, path(name))
    fix_serialization_id(path(name))


def save_ref(tensors, name):
    arrs = {k: v.detach().to(torch.float32).contiguous().numpy() for k, v in tensors.items()}
    buf = io.BytesIO()
    np.savez(buf, **arrs)
    write(name, buf.getvalue())


def flat(prefix, obj, out):
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flat(f"{prefix}.{i}" if prefix else str(i), v, out)
    return out


# ---------------------------------------------------------------- benign torch checkpoints
torch.manual_seed(0)
base = torch.randn(4, 6)
shared = torch.randn(10)
grid = torch.arange(35, dtype=torch.float32).reshape(5, 7)
state = {
    "f32": torch.randn(3, 4),
    "f16": torch.randn(5).half(),
    "bf16": torch.randn(2, 3).bfloat16(),
    "i64": torch.arange(-3, 4, dtype=torch.int64),
    "transposed": base.t(),                       # non-contiguous, stride (1, 6)
    "stepped": grid[1::2, 2::3],                  # non-contiguous, storage offset 9, strides (14, 3)
    "shared_a": shared[0:4],                      # two views of one storage
    "shared_b": shared[2:8].view(2, 3),
    "scalar": torch.tensor(2.5),
}
assert not state["transposed"].is_contiguous() and not state["stepped"].is_contiguous()
save_torch(state, "state.pt")
save_ref(state, "state.ref.npz")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 3)
        self.fc2 = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


torch.manual_seed(1)
net = Net()
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
x = torch.randn(8, 4)
for _ in range(2):
    opt.zero_grad()
    net(x).pow(2).mean().backward()
    opt.step()
ckpt = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 2, "note": "wscan fixture"}
save_torch(ckpt, "model.pt")
save_ref(flat("", ckpt, {}), "model.ref.npz")

# Legacy (pre-1.6) serialization: must be refused with a clear message.
torch.save({"w": torch.ones(2)}, path("legacy.pt"), _use_new_zipfile_serialization=False)


def fix_legacy_keys(p):
    """Legacy files name storages by a run-dependent number: replace each key by a fixed one of equal length."""
    import pickletools
    data = open(p, "rb").read()
    pos, pickles = 0, []
    for _ in range(5):  # magic, protocol, sys_info, object, storage keys
        ops = list(pickletools.genops(data[pos:]))  # static disassembly only; nothing is executed
        pickles.append(ops)
        pos += ops[-1][2] + 1
    keys = [a for op, a, _ in pickles[4] if isinstance(a, str)]
    for n, k in enumerate(keys):
        data = data.replace(k.encode(), str(n).rjust(len(k), "9").encode())
    open(p, "wb").write(data)


fix_legacy_keys(path("legacy.pt"))

# Benign numpy object array and joblib dump.
np.save(path("objarr.npy"), np.array([1, "a", None, {"k": 2}], dtype=object), allow_pickle=True)
try:
    import joblib
    joblib.dump({"w": np.arange(4, dtype=np.float32), "b": np.ones(2)}, path("data.joblib"))
except ImportError:
    pass


# ---------------------------------------------------------------- malicious pickles (never unpickled)
class Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


import os as _os
import runpy
import socket
import subprocess
import webbrowser

PAYLOAD = "echo wscan-fixture-harmless"
evil = {
    "evil_os_system.pkl": Reduce(_os.system, (PAYLOAD,)),
    "evil_eval.pkl": Reduce(eval, ("1+1",)),
    "evil_exec.pkl": Reduce(exec, ("x = 1",)),
    "evil_popen.pkl": Reduce(subprocess.Popen, ((PAYLOAD,),)),
    "evil_runpy.pkl": Reduce(runpy._run_code, ("x = 1", {})),
    "evil_webbrowser.pkl": Reduce(webbrowser.open, ("http://127.0.0.1/",)),
    "evil_socket.pkl": Reduce(socket.create_connection, (("127.0.0.1", 9),)),
}
for name, obj in evil.items():
    write(name, pickle.dumps(obj, protocol=4))
os_system_pickle = pickle.dumps(Reduce(_os.system, (PAYLOAD,)), protocol=2)
write("evil_os_system_p0.pkl", pickle.dumps(Reduce(_os.system, (PAYLOAD,)), protocol=0))

# STACK_GLOBAL whose module and name are only reachable through the memo.
sg = bytearray(b"\x80\x04")
sg += b"\x8c\x05posix\x94" + b"0"          # 'posix' -> memo 0, popped
sg += b"\x8c\x06system\x94" + b"0"         # 'system' -> memo 1, popped
sg += b"N0"                                 # noise
sg += b"h\x00h\x01\x93"                     # BINGET 0, BINGET 1, STACK_GLOBAL
sg += b"\x8c" + bytes([len(PAYLOAD)]) + PAYLOAD.encode() + b"\x85R."
write("evil_stack_global_memo.pkl", bytes(sg))

# Two pickles in one file: benign first, malicious second.
write("evil_concat.pkl", pickle.dumps({"a": 1}, protocol=4) + os_system_pickle)

# Misleading extensions.
write("evil_pickle.npy", os_system_pickle)
write("evil_pickle.safetensors", pickle.dumps(Reduce(eval, ("1+1",)), protocol=4))

# Misleading magic: no PROTO opcode, the stream starts with FRAME (Python unpickles it all the same).
write("evil_no_proto.bin", pickle.dumps(Reduce(_os.system, (PAYLOAD,)), protocol=4)[2:])

# Nested pickle.loads of embedded bytes.
write("evil_nested_loads.pkl", pickle.dumps(Reduce(pickle.loads, (os_system_pickle,)), protocol=4))


def torch_zip_with_extra(src, dst, extra_name, extra_bytes):
    with zipfile.ZipFile(path(src)) as zin, zipfile.ZipFile(path(dst), "w", zipfile.ZIP_STORED) as zout:
        prefix = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(2020, 1, 1, 0, 0, 0))
            zout.writestr(zi, zin.read(info.filename))
        zi = zipfile.ZipInfo(f"{prefix}/{extra_name}", date_time=(2020, 1, 1, 0, 0, 0))
        zout.writestr(zi, extra_bytes)


save_torch({"w": torch.arange(4, dtype=torch.float32)}, "small.pt")
torch_zip_with_extra("small.pt", "evil_member_gitkeep.pt", ".gitkeep", os_system_pickle)
torch_zip_with_extra("small.pt", "evil_member_data.pt", "data/7", os_system_pickle)
# A torch zip whose data.pkl itself is malicious.
with zipfile.ZipFile(path("small.pt")) as zin, zipfile.ZipFile(path("evil_datapkl.pt"), "w", zipfile.ZIP_STORED) as zout:
    for info in zin.infolist():
        zi = zipfile.ZipInfo(info.filename, date_time=(2020, 1, 1, 0, 0, 0))
        zout.writestr(zi, os_system_pickle if info.filename.endswith("data.pkl") else zin.read(info.filename))

# A checkpoint whose view claims more elements than its storage holds: size (4,) patched to (5,).
small = open(path("small.pt"), "rb").read()
needle = b"K\x00K\x04\x85"   # storage offset 0, size (4,)
assert small.count(needle) == 1
write("bad_view_oob.pt", small.replace(needle, b"K\x00K\x05\x85"))

# ---------------------------------------------------------------- malformed pickles
good = pickle.dumps({"a": [1, 2, 3], "b": "text" * 10}, protocol=4)
write("bad_truncated.pkl", good[: len(good) // 2])
write("bad_opcode.pkl", b"\x80\x04\xff.")
write("bad_recursion_bomb.pkl", b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".")
write("bad_memo_missing.pkl", b"\x80\x02h\x05.")
write("bad_memo_huge.pkl", b"\x80\x02Nr\xff\xff\xff\xff.")
write("bad_huge_unicode.pkl", b"\x80\x04X\xff\xff\xff\x7fabc.")
write("bad_underflow.pkl", b"\x80\x02R.")

total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}")
