"""Venue instrument lists across runs: the on-disk cache and the checks of ``relay check``.

The running relay fetches each venue's instrument list (:func:`relay.venue.fetch_catalog`)
when the venue starts and every ``instruments_refresh_secs``, and keeps the latest one as
``<state_dir>/instruments/<venue id>.json``. ``relay check`` verifies the configured symbols
against that file, offline; ``relay check --fetch`` asks the venues themselves.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

import adapters
from relay.codec import Adapter
from relay.config import Config, VenueConfig, venue_endpoints, venue_subscriptions
from relay.instruments import Catalog


def cache_path(state_dir: str, venue: str) -> Path:
    return Path(state_dir) / "instruments" / f"{venue}.json"


def load_cached(state_dir: str, venue: str) -> Catalog | None:
    """The cached list, or ``None`` when there is none or it is unreadable."""
    try:
        return Catalog.from_json(cache_path(state_dir, venue).read_bytes())
    except (OSError, ValueError):
        return None


def save(state_dir: str, venue: str, catalog: Catalog) -> None:
    """Write the list atomically: a crash mid-write leaves the previous one."""
    path = cache_path(state_dir, venue)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_bytes(catalog.to_json())
    os.replace(partial, path)


def unlisted(venue: VenueConfig, adapter: Adapter, catalog: Catalog) -> list[str]:
    """Configured native symbols the list lacks or marks inactive."""
    assert adapter.instruments is not None
    _, missing = catalog.resolve(venue_subscriptions(venue), key=adapter.instruments.native_key)
    return missing


async def check(config: Config, *, fetch: bool) -> tuple[list[str], list[str]]:
    """Verify every enabled venue's symbols against its instrument list.

    Returns notes (one line per venue: what it was checked against, or why not) and errors
    (one line per unlisted symbol). With ``fetch``, each venue is asked for its list now
    (over the network); otherwise the cached list of the last run is used.
    """
    from relay.venue import CATALOG_ERRORS, RestBudget, fetch_catalog

    notes: list[str] = []
    errors: list[str] = []
    async with httpx.AsyncClient() as http:
        for index, venue in enumerate(config.venues):
            adapter = adapters.load(venue.adapter)
            if not venue.enabled or adapter.instruments is None:
                continue
            if venue.missing_credentials(adapter):
                notes.append(f"venue {venue.id}: instruments not verified (disabled)")
                continue
            if fetch:
                rest = RestBudget(venue.rest.requests_per_second, venue.rest.burst)
                try:
                    catalog: Catalog | None = await fetch_catalog(
                        adapter.instruments, venue_endpoints(venue), venue.credentials, http, rest
                    )
                except CATALOG_ERRORS as exc:
                    notes.append(f"venue {venue.id}: instruments not verified: {exc!r}")
                    continue
            else:
                catalog = load_cached(config.service.state_dir, venue.id)
                if catalog is None:
                    notes.append(
                        f"venue {venue.id}: instruments not verified (no cached list; "
                        "`relay check --fetch` asks the venue)"
                    )
                    continue
            assert catalog is not None
            fetched = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(catalog.fetched_at_ns / 1e9))
            notes.append(
                f"venue {venue.id}: instruments verified against its list of {len(catalog)}"
                f" fetched {fetched}"
            )
            errors += [
                f"venues[{index}].subscriptions: {native!r} is not listed (or not trading) "
                f"on {venue.id}"
                for native in unlisted(venue, adapter, catalog)
            ]
    return notes, errors
