"""The float dtypes a model runs in, by name. Torch-free: the API front names a prepared-cache entry (its key holds
the dtype's name) without importing torch; lucid.loader.tensors turns the name into a torch.dtype."""

from __future__ import annotations

_NAMES = {
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


def dtype_name(dtype: object) -> str:
    """'bf16' / 'bfloat16' / torch.bfloat16 ... -> 'bfloat16'; ValueError for a dtype a model cannot run in."""
    name = _NAMES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of bfloat16, float16, float32")
    return name
