#!/usr/bin/env python3
"""Writes the seed corpus of the gguf_reader fuzz target (fuzz/corpus/gguf_reader/).

Valid small files (one of them the real test model's small keys with three tiny tensors),
a 4 KiB prefix of the real model, and crafted headers: huge lengths and counts, nested
arrays, bad type ids, bad alignment, truncations. Usage: gguf_seeds.py [MODEL.gguf]
"""
import os
import struct
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf_reader")


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return u64(len(b)) + b


def kv(key, ty, raw):
    return string(key) + u32(ty) + raw


def header(n_tensors, kvs):
    return b"GGUF" + u32(3) + u64(n_tensors) + u64(len(kvs)) + b"".join(kvs)


def tensor(name, dims, ty, offset):
    return string(name) + u32(len(dims)) + b"".join(struct.pack("<q", d) for d in dims) + u32(ty) + u64(offset)


def pad(b, align=32):
    return b + b"\0" * (-len(b) % align)


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def real_kvs(path, limit=2048):
    """The real model's key/value pairs whose encoding is at most `limit` bytes."""
    with open(path, "rb") as f:
        data = f.read(16 << 20)
    pos = 24
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    out = []

    def skip_value(p, ty):
        if ty in sizes:
            return p + sizes[ty]
        if ty == 8:
            return p + 8 + struct.unpack_from("<Q", data, p)[0]
        elem, n = struct.unpack_from("<IQ", data, p)
        p += 12
        for _ in range(n):
            p = skip_value(p, elem)
        return p

    for _ in range(n_kv):
        start = pos
        klen = struct.unpack_from("<Q", data, pos)[0]
        pos += 8 + klen
        ty = struct.unpack_from("<I", data, pos)[0]
        pos = skip_value(pos + 4, ty)
        if pos - start <= limit:
            out.append(data[start:pos])
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    arch = kv("general.architecture", 8, string("gemma3"))
    write("valid-tiny", header(0, [arch]))
    # Three tensors: F32 [8], Q4_0 [32, 2], Q4_K [256], contiguous and aligned.
    infos = [tensor("a.weight", [8], 0, 0), tensor("b.weight", [32, 2], 2, 32), tensor("c.weight", [256], 12, 96)]
    body = pad(header(3, [arch, kv("general.alignment", 4, u32(32))]) + b"".join(infos))
    write("valid-tensors", body + b"\1" * (32 + 64 + 144))
    arr = u32(8) + u64(3) + string("<pad>") + string("<eos>") + string("hi")
    write("valid-arrays", header(0, [arch, kv("tokenizer.ggml.tokens", 9, arr),
                                     kv("tokenizer.ggml.scores", 9, u32(6) + u64(3) + struct.pack("<3f", 0, 0, -1.5)),
                                     kv("flag", 7, b"\1"), kv("n", 11, struct.pack("<q", -7))]))
    if len(sys.argv) > 1:
        model = sys.argv[1]
        with open(model, "rb") as f:
            write("real-prefix-4k", f.read(4096))
        kvs = real_kvs(model)
        write("real-small-keys", pad(header(3, kvs) + b"".join(infos)) + b"\2" * (32 + 64 + 144))
    write("huge-string", header(0, [kv("k", 8, u64(1 << 62) + b"abc")]))
    write("huge-key", b"GGUF" + u32(3) + u64(0) + u64(1) + u64(0xFFFFFFFFFFFFFFFF) + b"k")
    write("huge-array", header(0, [kv("k", 9, u32(6) + u64(1 << 40) + b"\0" * 16)]))
    write("huge-counts", b"GGUF" + u32(3) + u64(1 << 60) + u64(1 << 60) + b"\0" * 32)
    write("nested-array", header(0, [kv("k", 9, u32(9) + u64(1) + u32(4) + u64(1) + u32(7))]))
    write("bad-type", header(0, [kv("k", 13, b"\0" * 8)]))
    write("bad-alignment", header(0, [kv("general.alignment", 10, u64(48))]))
    write("bad-tensor-type", pad(header(1, [arch]) + tensor("t", [32], 4, 0)) + b"\0" * 64)
    write("bad-offset", pad(header(2, [arch]) + tensor("a", [8], 0, 0) + tensor("b", [8], 0, 16)) + b"\0" * 64)
    write("truncated", header(1, [arch]) + tensor("t", [32], 0, 0)[:-3])
    write("split", header(0, [kv("split.count", 2, struct.pack("<H", 3))]))


if __name__ == "__main__":
    main()
