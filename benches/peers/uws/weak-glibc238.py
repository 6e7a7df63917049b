"""Marks an ELF file's requirement of the symbol version GLIBC_2.38 weak
(VER_FLG_WEAK in its .gnu.version_r entry), so a glibc older than 2.38 loads
it; the symbols of that version then come from isoc23-shim.so (LD_PRELOAD).
Usage: python3 weak-glibc238.py FILE.node  (idempotent; prints what it did)."""
import struct
import sys

VERSION = b"GLIBC_2.38"
SHT_GNU_VERNEED = 0x6FFFFFFE
VER_FLG_WEAK = 0x2

path = sys.argv[1]
data = bytearray(open(path, "rb").read())
if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
    sys.exit(f"{path}: not a little-endian ELF64 file")
shoff, = struct.unpack_from("<Q", data, 0x28)
shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
patched = 0
for (_, sh_type, _, _, off, size, link, info, _, _) in sections:
    if sh_type != SHT_GNU_VERNEED:
        continue
    strtab_off = sections[link][4]
    at = off
    for _ in range(info):
        _, cnt, _, aux, nxt = struct.unpack_from("<HHIII", data, at)
        a = at + aux
        for _ in range(cnt):
            _, flags, _, name, anext = struct.unpack_from("<IHHII", data, a)
            start = strtab_off + name
            if data[start:data.index(b"\0", start)] == VERSION:
                if not flags & VER_FLG_WEAK:
                    struct.pack_into("<H", data, a + 4, flags | VER_FLG_WEAK)
                    patched += 1
            a += anext
        at += nxt
if patched:
    open(path, "wb").write(data)
print(f"{path}: {VERSION.decode()} requirement(s) made weak: {patched}")
