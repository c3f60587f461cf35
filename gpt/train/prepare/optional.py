"""The data pipeline's optional packages, imported when a stage needs them."""
from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "data"   # pip install 'tinygpt[data]' brings every one of them


def require(module: str, what: str) -> ModuleType:
    """`module`, or an ImportError saying which flag or input needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise ImportError(f"{what} needs the package {package}, which is not installed: "
                          f"pip install 'tinygpt[{EXTRA}]' (or pip install {package})") from None
