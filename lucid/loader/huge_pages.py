"""Packed weights mapped in 2 MiB pages (Linux transparent huge pages), for the decode stream.

Decode reads every weight once per token. Mapped in 4 KiB pages, as safetensors maps a file, that stream crosses a
page boundary every 4 KiB: a TLB miss each time, and the CPU's hardware prefetchers stop at every boundary. Mapped at
a 2 MiB-aligned address with MADV_HUGEPAGE, a file whose page cache holds 2 MiB folios is mapped in 2 MiB pages
(`FilePmdMapped` in /proc/PID/smaps): on a 2-core Zen 4, single-stream decode of the default model was 3-10% faster
in 6 of 7 paired runs against small pages, and touching all 555 MB of it took 0.03 s instead of 0.4 s of small page
faults (docs/BENCHMARKS.md, session 8).

The page cache holds 2 MiB folios when the file was read through such a mapping (readahead follows the advice), not
after a plain write: `drop_cached_pages` after writing a cache entry makes its next mapping read it in large folios.
Without THP (not Linux, or turned off) the file is mapped in small pages, as before. The mapping is private and
writable: an in-place write to a weight copies its page, as with safetensors' own mapping, instead of faulting.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import math
import os
import struct
import sys
import weakref
from pathlib import Path

import torch

log = logging.getLogger("lucid.loader")

HUGE_PAGE = 2 << 20
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# safetensors' dtype names -> torch dtypes (those a packed cache holds, and their neighbours)
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}

# <sys/mman.h> (Linux, x86-64 and arm64 alike)
PROT_READ, PROT_WRITE = 0x1, 0x2
MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x02, 0x10, 0x20
MADV_HUGEPAGE = 14


def huge_pages_available() -> bool:
    """Whether this kernel maps memory in transparent huge pages when asked (mode `always` or `madvise`)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return "[never]" not in THP_SETTING.read_text()
    except OSError:
        return False


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def _map_aligned(path: Path, size: int) -> tuple[int, int, int]:
    """Map `path` privately at a 2 MiB-aligned address, advised for huge pages: (the file's address, start and
    length of the address range reserved for it: munmap that to let it go)."""
    libc = _libc()
    reserved = size + HUGE_PAGE
    # Reserve an address range with room to align, then place the file at its first 2 MiB boundary.
    start = libc.mmap(None, reserved, 0, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if start in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap: no address range")
    aligned = (start + HUGE_PAGE - 1) // HUGE_PAGE * HUGE_PAGE
    fd = os.open(path, os.O_RDONLY)
    try:
        mapped = libc.mmap(aligned, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0)
    finally:
        os.close(fd)
    if mapped != aligned:
        libc.munmap(start, reserved)
        raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
    if libc.madvise(aligned, size, MADV_HUGEPAGE) != 0:  # only a missed speed-up: map it anyway
        log.debug("madvise(MADV_HUGEPAGE) failed: %s", os.strerror(ctypes.get_errno()))
    return aligned, start, reserved


def _tensor_layout(path: Path, size: int) -> dict[str, tuple[torch.dtype, list[int], int, int]]:
    """{name: (dtype, shape, first byte, end byte)} from the file's header, every entry checked against the file;
    ValueError for anything this reader does not take (damaged, an unknown dtype, a misaligned tensor)."""
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError(f"header length {header_len} past the end of the file")
            header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        layout = {}
        for name, entry in header.items():
            dtype, shape = DTYPES.get(entry["dtype"]), [int(n) for n in entry["shape"]]
            begin, end = (8 + header_len + int(offset) for offset in entry["data_offsets"])
            fits = dtype is not None and end <= size and end - begin == math.prod(shape) * dtype.itemsize
            if not fits or begin % dtype.itemsize:
                raise ValueError(f"tensor {name} ({entry['dtype']} {shape} at {begin}) is not one this reader maps")
            layout[name] = (dtype, shape, begin, end)
        return layout
    except (struct.error, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def map_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file as views of one mapping of it in huge pages (see the module's docstring).
    The mapping goes when the last tensor does. Raises ValueError for a file this reader does not take: the caller
    falls back to safetensors."""
    size = path.stat().st_size
    layout = _tensor_layout(path, size)
    address, start, reserved = _map_aligned(path, size)
    pages = (ctypes.c_char * size).from_address(address)
    weakref.finalize(pages, _libc().munmap, start, reserved)  # when no tensor holds the mapping any more
    whole = torch.frombuffer(pages, dtype=torch.uint8)  # keeps `pages` alive
    return {name: whole[begin:end].view(dtype).view(shape) for name, (dtype, shape, begin, end) in layout.items()}


def drop_cached_pages(path: Path) -> None:
    """Drop `path` from the page cache (after it is written): its next mapping then reads it through readahead in
    large folios, which a huge-page mapping can use, instead of keeping the small ones the write left."""
    if not huge_pages_available():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except OSError as exc:
        log.debug("could not drop %s from the page cache: %s", path, exc)
