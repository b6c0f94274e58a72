from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.federation import Federation, federation


@pytest_asyncio.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with federation(tmp_path) as running:
        yield running


@pytest_asyncio.fixture
async def manual_fed(tmp_path: Path) -> AsyncIterator[Federation]:
    """Platforms that wait for a clerk instead of completing cases by themselves."""
    async with federation(tmp_path, auto="manual") as running:
        yield running
