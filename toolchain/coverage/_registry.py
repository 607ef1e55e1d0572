"""The registry of third-party model builders: one entry per (library, family, name), filled by decorator.

A builder takes a size (`"small"` for the generated tests, `"bench"` for the coverage benchmark) and
returns a `BuiltModel`: the module, its example inputs (tensor, tuple or dict) and how the same model
is named on the command line (`CliSpec`), or `None` where a small config has no command-line name.

>>> @register_builder("torchvision", "resnet", "resnet18", representative=True)   # doctest: +SKIP
... def resnet18(size): return BuiltModel(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64), None)
>>> build("torchvision:resnet18", "small").model                                   # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from toolchain.errors import ToolchainError
from toolchain.graph_probes import find_zero_weights, wake_weights
from toolchain.inputs import ModelInputs

SIZES = ("small", "bench")


@dataclass(frozen=True)
class CliSpec:
    """How `toolchain prune` names the model: `--model` plus input options (e.g. `--input-shape 1,3,224,224`).

    `model` may hold `{workdir}`: the benchmark replaces it by a folder where `write_files` has put what the
    source reads (a Hugging Face `config.json`, say).
    """

    model: str
    input_args: tuple[str, ...] = ()
    write_files: Callable[[str], None] | None = None


@dataclass
class BuiltModel:
    model: nn.Module
    inputs: ModelInputs
    cli: CliSpec | None


# The ignore list a user would write for Torch-Pruning by hand: model -> modules whose outputs stay whole.
IgnoreList = Callable[[nn.Module], list[nn.Module]]


@dataclass(frozen=True)
class CoverageEntry:
    """A registered builder. `representative` entries (one per family) run in the generated tests."""

    library: str
    family: str
    name: str
    builder: Callable[[str], BuiltModel]
    representative: bool
    hand_ignore: IgnoreList | None

    @property
    def key(self) -> str:
        return f"{self.library}:{self.name}"


_ENTRIES: dict[str, CoverageEntry] = {}


def register_builder(library: str, family: str, name: str, representative: bool = False,
                     hand_ignore: IgnoreList | None = None):
    """Register `builder(size) -> BuiltModel` as `library:name`."""

    def wrap(builder: Callable[[str], BuiltModel]) -> Callable[[str], BuiltModel]:
        entry = CoverageEntry(library, family, name, builder, representative, hand_ignore)
        if entry.key in _ENTRIES:
            raise ValueError(f"coverage entry {entry.key!r} registered twice")
        _ENTRIES[entry.key] = entry
        return builder

    return wrap


def list_entries(pattern: str = "*", library: str | None = None, representative: bool | None = None) -> list[str]:
    """Entry keys (`library:name`) matching a shell-style pattern, sorted."""
    return sorted(k for k, e in _ENTRIES.items() if fnmatch.fnmatch(k, pattern)
                  and (library is None or e.library == library)
                  and (representative is None or e.representative == representative))


def get_entry(key: str) -> CoverageEntry:
    if key not in _ENTRIES:
        raise ToolchainError(f"unknown coverage entry {key!r}; valid: {', '.join(list_entries())}")
    return _ENTRIES[key]


def build(key: str, size: str = "small") -> BuiltModel:
    """Build an entry's model (eval mode) with its example inputs at `size` ("small" or "bench")."""
    if size not in SIZES:
        raise ToolchainError(f"unknown size {size!r}; valid: {', '.join(SIZES)}")
    built = get_entry(key).builder(size)
    built.model.eval()
    wake_zero_weights(built.model)
    return built


def wake_zero_weights(model: nn.Module, seed: int = 0) -> list[str]:
    """Give weights a library initialises to exactly zero ordinary values, for good; returns their names.

    torchvision's ViT heads and timm's last BatchNorm of each residual block (`zero_init_last`) start at zero,
    so the model's output does not depend on what feeds them and no check against the dense or the masked
    dense model can see a pruning error there (a pruned torchvision ViT outputs zeros whatever was removed).
    Norm weights become 1, other weights N(0, 1/fan_in); biases stay as they are
    (`toolchain.graph_probes.wake_weights`). Seeded: the same model every build.

    >>> head = nn.Linear(4, 2); _ = nn.init.zeros_(head.weight)
    >>> wake_zero_weights(nn.Sequential(head)), bool(head.weight.abs().sum() > 0)
    (['0.weight'], True)
    """
    return wake_weights(find_zero_weights(model), seed)


def modules_matching(model: nn.Module, name_suffixes: tuple[str, ...] = (),
                     types: tuple[type, ...] = ()) -> list[nn.Module]:
    """Modules whose dotted name ends with one of `name_suffixes` or whose type is one of `types`:
    the building block of the hand-written Torch-Pruning ignore lists."""
    found = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if (name and leaf in name_suffixes) or (types and isinstance(module, types)):
            found.append(module)
    return found
