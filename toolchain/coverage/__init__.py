"""Third-party models (torchvision, timm, transformers, Ultralytics) for the coverage tests and benchmark.

One registry, filled by decorator from one module per library; `list_entries()` lists `library:name`
keys and `build(key, size)` returns the model, its example inputs and its command-line name.

>>> built = build("torchvision:resnet18", "small")      # doctest: +SKIP
>>> built.model(built.inputs).shape
torch.Size([1, 10])
"""

from toolchain.coverage import (  # noqa: F401  (fill the registry)
    timm_models,
    torchvision_models,
    transformers_models,
    ultralytics_models,
)
from toolchain.coverage._registry import (
    SIZES,
    BuiltModel,
    CliSpec,
    CoverageEntry,
    build,
    get_entry,
    list_entries,
    register_builder,
)

__all__ = ["SIZES", "BuiltModel", "CliSpec", "CoverageEntry", "build", "get_entry", "list_entries",
           "register_builder"]
