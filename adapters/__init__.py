"""Sans-IO venue codecs: one module per venue, frames in, normalized events out.

Each module exports ``ADAPTER`` (a :class:`relay.codec.Adapter`) whose name is the module's
name. :data:`NAMES` lists the modules found in this package, the adapter names a config may
use; :func:`load` imports one on demand, so a venue's module is only loaded when a config
asks for it.
"""

from __future__ import annotations

import importlib
import pkgutil

from relay.codec import Adapter

NAMES: tuple[str, ...] = tuple(
    sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
)


def load(name: str) -> Adapter:
    if name not in NAMES:
        raise KeyError(name)
    adapter: Adapter = importlib.import_module(f"adapters.{name}").ADAPTER
    return adapter
