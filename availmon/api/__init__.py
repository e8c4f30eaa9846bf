"""HTTP API (aiohttp): thin handlers over the service layer."""

from availmon.api.app import ApiDeps, create_app

__all__ = ["ApiDeps", "create_app"]
