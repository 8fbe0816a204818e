"""Sans-IO venue codecs: one module per venue, frames in, normalized events out.

Each module exports ``ADAPTER`` (a :class:`relay.codec.Adapter`). :data:`NAMES` lists the
adapter names a config may use; :func:`load` imports one on demand so a venue's module is
only loaded when a config asks for it.
"""

from __future__ import annotations

import importlib

from relay.codec import Adapter

NAMES: tuple[str, ...] = ("binance",)


def load(name: str) -> Adapter:
    if name not in NAMES:
        raise KeyError(name)
    adapter: Adapter = importlib.import_module(f"adapters.{name}").ADAPTER
    return adapter
