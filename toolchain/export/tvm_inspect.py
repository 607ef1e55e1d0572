"""Read what a compiled TVM library holds: its CPU architecture and the CUDA architectures embedded in it.

`cuobjdump` is not needed: the ELF header names the CPU, and the CUDA part is found by walking the
fat binaries (magic 0xBA55ED50) that TVM serialises into the library, checking each embedded cubin's
own ELF header (machine EM_CUDA, target SM in e_flags) and reading `.target` from PTX text.

Example:
    >>> inspect_library("model.jetson-orin.so")            # doctest: +SKIP
    {'elf_machine': 'aarch64', 'cuda_sass_archs': ['sm_87'], 'cuda_ptx_archs': ['sm_87'],
     'cuda_archs': ['sm_87'], 'cuda_source_only': False}
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from toolchain.errors import ToolchainError

_ELF_MAGIC = b"\x7fELF"
_EM_CUDA = 190
_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 190: "cuda", 243: "riscv"}
_FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
_FATBIN_KIND_PTX, _FATBIN_KIND_ELF = 1, 2
_PTX_TARGET = re.compile(rb"\.target\s+(sm_\d+[a-z]?)")
# TVM keeps CUDA C++ source (to be compiled when loaded) when no CUDA compiler ran at build time.
_CUDA_SOURCE_MARK = b'extern "C" __global__'


def elf_machine(data: bytes) -> str:
    """CPU architecture named by an ELF header (`aarch64`, `x86_64`, `cuda`, ...)."""
    if data[:4] != _ELF_MAGIC or len(data) < 20:
        raise ToolchainError("not an ELF file")
    little = data[5] == 1
    (machine,) = struct.unpack_from("<H" if little else ">H", data, 18)
    return _ELF_MACHINES.get(machine, f"em_{machine}")


def cubin_arch(data: bytes) -> str | None:
    """`sm_XX` of a CUDA ELF (cubin) from its e_flags, None if `data` is not a 64-bit CUDA ELF."""
    if data[:4] != _ELF_MAGIC or len(data) < 52 or data[4] != 2:
        return None
    if struct.unpack_from("<H", data, 18)[0] != _EM_CUDA:
        return None
    abi_version = data[8]
    (flags,) = struct.unpack_from("<I", data, 48)
    # CUDA ELF ABI v8 (CUDA 12.8+) moved the SM number from bits 0-7 to bits 8-15.
    sm = (flags >> 8) & 0xFF if abi_version >= 8 else flags & 0xFF
    return f"sm_{sm}"


def fatbin_entries(data: bytes, start: int) -> list[dict]:
    """Entries of the fat binary at `start`: kind (`ptx`/`elf`) and target SM of each.

    Layout: a 16-byte header (magic, version u16, header size u16, payload size u64) followed by
    entries, each a header (kind u16 at +0, header size u32 at +4, payload size u64 at +8,
    target SM u32 at +28) and its payload.
    """
    _, version, header_size, fat_size = struct.unpack_from("<IHHQ", data, start)
    if version != 1 or header_size != 16 or start + header_size + fat_size > len(data):
        return []
    entries, offset, end = [], start + header_size, start + header_size + fat_size
    while offset + 32 <= end:
        kind, _, entry_header_size, payload_size = struct.unpack_from("<HHIQ", data, offset)
        (sm,) = struct.unpack_from("<I", data, offset + 28)
        if kind not in (_FATBIN_KIND_PTX, _FATBIN_KIND_ELF) or entry_header_size < 32:
            break
        payload = data[offset + entry_header_size : offset + entry_header_size + payload_size]
        entry = {"kind": "ptx" if kind == _FATBIN_KIND_PTX else "elf", "arch": f"sm_{sm}"}
        if kind == _FATBIN_KIND_ELF and payload[:4] == _ELF_MAGIC:
            entry["elf_arch"] = cubin_arch(payload)  # the cubin's own header, a second witness
        entries.append(entry)
        offset += entry_header_size + payload_size
    return entries


def inspect_library(path: str | Path) -> dict:
    """ELF machine of the library and the CUDA architectures embedded in it.

    `cuda_sass_archs`: machine code (cubins, alone or in fat binaries); `cuda_ptx_archs`: PTX targets;
    `cuda_source_only`: True when the library carries CUDA source only (compiled when loaded).
    """
    path = Path(path)
    if not path.is_file():
        raise ToolchainError(f"library not found: {path}")
    data = path.read_bytes()
    machine = elf_machine(data)
    sass, ptx = set(), set()
    spans = []  # byte ranges already explained by a fat binary
    for match in re.finditer(re.escape(_FATBIN_MAGIC), data):
        entries = fatbin_entries(data, match.start())
        if not entries:
            continue
        fat_size = struct.unpack_from("<Q", data, match.start() + 8)[0]
        spans.append((match.start(), match.start() + 16 + fat_size))
        for entry in entries:
            if entry["kind"] == "elf":
                if entry.get("elf_arch") not in (None, entry["arch"]):
                    raise ToolchainError(f"{path}: fat binary header says {entry['arch']}, "
                                         f"its cubin says {entry['elf_arch']}")
                sass.add(entry["arch"])
            else:
                ptx.add(entry["arch"])
    for match in re.finditer(re.escape(_ELF_MAGIC), data[1:]):
        start = match.start() + 1
        if any(lo <= start < hi for lo, hi in spans):
            continue
        arch = cubin_arch(data[start : start + 64])
        if arch:
            sass.add(arch)
    ptx.update(m.group(1).decode() for m in _PTX_TARGET.finditer(data))
    archs = sorted(sass | ptx)
    return {
        "elf_machine": machine,
        "cuda_sass_archs": sorted(sass),
        "cuda_ptx_archs": sorted(ptx),
        "cuda_archs": archs,
        "cuda_source_only": not archs and _CUDA_SOURCE_MARK in data,
    }
