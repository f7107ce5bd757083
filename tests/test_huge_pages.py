"""The packed cache mapped in huge pages (lucid/loader/huge_pages.py): the same tensors as safetensors reads, a
2 MiB-aligned private mapping that goes with its last tensor, and a fall-back for files it does not take."""

from __future__ import annotations

import gc
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lucid.loader import packed_cache
from lucid.loader.huge_pages import HUGE_PAGE, map_safetensors


def _mapped_ranges(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(str(path))]


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w.qweight": torch.randint(0, 255, (3, 7, 256), dtype=torch.uint8, generator=g),
        "w.scales": torch.randint(-30000, 30000, (3, 7, 16), dtype=torch.int16, generator=g),
        "norm.weight": torch.randn(896, generator=g),
        "embed.weight": torch.randn(5, 64, generator=g).to(torch.bfloat16),
        "odd": torch.randint(0, 9, (3,), dtype=torch.uint8, generator=g),   # 3 bytes: the next tensor is unaligned
        "scalar": torch.tensor(2.5),                                         # ... unless safetensors pads: checked
    }


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux only")
def test_same_tensors_as_safetensors_in_one_aligned_mapping_that_goes_with_them(tmp_path, state):
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    try:
        mapped = map_safetensors(path)
    except ValueError:  # a layout this reader leaves to safetensors: covered by the fall-back test
        pytest.skip("safetensors laid this file out unaligned")
    # One mapping, at a 2 MiB boundary: the file's first byte there.
    ranges = _mapped_ranges(path)
    assert len(ranges) == 1 and int(ranges[0].split("-")[0], 16) % HUGE_PAGE == 0
    expected = load_file(str(path))
    assert mapped.keys() == expected.keys()
    for name, tensor in expected.items():
        assert mapped[name].dtype == tensor.dtype and mapped[name].shape == tensor.shape
        assert torch.equal(mapped[name], tensor), name
    # Private and writable: an in-place write copies the page, the file stays as it was.
    mapped["norm.weight"].mul_(0)
    assert torch.equal(load_file(str(path))["norm.weight"], state["norm.weight"])
    del mapped, tensor, expected
    gc.collect()
    assert _mapped_ranges(path) == []


def _write_raw(path: Path, header: dict, data: bytes) -> None:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def test_files_it_does_not_take_are_refused_and_the_cache_falls_back_to_safetensors(tmp_path, monkeypatch):
    unknown = tmp_path / "unknown.safetensors"
    _write_raw(unknown, {"x": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}, bytes(8))
    with pytest.raises(ValueError, match="not one this reader maps"):
        map_safetensors(unknown)
    misaligned = tmp_path / "misaligned.safetensors"
    _write_raw(misaligned, {"x": {"dtype": "F32", "shape": [1], "data_offsets": [1, 5]}}, bytes(8))
    with pytest.raises(ValueError):
        map_safetensors(misaligned)
    wrong_size = tmp_path / "wrong_size.safetensors"
    _write_raw(wrong_size, {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8))
    with pytest.raises(ValueError):
        map_safetensors(wrong_size)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(b"abc")
    with pytest.raises(ValueError):
        map_safetensors(truncated)
    # load_packed: a refusal costs nothing but the huge pages.
    entry = tmp_path / "entry"
    entry.mkdir()
    save_file({"a": torch.arange(6, dtype=torch.float32)}, str(entry / packed_cache.WEIGHTS_FILE))

    def refuse(path: Path) -> dict:
        raise ValueError("no")

    monkeypatch.setattr("lucid.loader.huge_pages.map_safetensors", refuse)
    loaded = packed_cache.load_packed(entry)
    assert loaded is not None and torch.equal(loaded["a"], torch.arange(6, dtype=torch.float32))
