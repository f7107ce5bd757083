"""Safetensors files opened as views of a memory map."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lucid.loader.mapped_safetensors import MappedFileError, map_safetensors


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a.bf16": torch.randn(7, 33, generator=g).bfloat16(), "b.f32": torch.randn(5, generator=g),
            "c.u8": torch.randint(0, 255, (3, 17), dtype=torch.uint8, generator=g),
            "d.i16": torch.randint(-99, 99, (9,), dtype=torch.int16, generator=g), "e.empty": torch.zeros(0, 4)}


def test_mapped_tensors_equal_what_safetensors_reads(tmp_path: Path):
    path = tmp_path / "x.safetensors"
    save_file(sample_tensors(), str(path))
    mapped, read = map_safetensors(path), load_file(str(path))
    assert mapped.keys() == read.keys()
    for name in read:
        assert mapped[name].dtype == read[name].dtype and torch.equal(mapped[name], read[name])


def test_writing_a_mapped_tensor_leaves_the_file_alone(tmp_path: Path):
    path = tmp_path / "x.safetensors"
    save_file(sample_tensors(), str(path))
    before = path.read_bytes()
    map_safetensors(path)["b.f32"].fill_(3.0)
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"short", b"\xff" * 8 + b"{}", (20).to_bytes(8, "little") + b"not json" * 3])
def test_malformed_files_raise(tmp_path: Path, content: bytes):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(MappedFileError):
        map_safetensors(path)


def test_a_truncated_file_raises(tmp_path: Path):
    path = tmp_path / "x.safetensors"
    save_file(sample_tensors(), str(path))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(MappedFileError):
        map_safetensors(path)
