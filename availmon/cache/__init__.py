"""Redis: the current status of every endpoint for other readers, and an event channel.

Key layout and payloads: availmon.cache.layout (and README, "Redis").
"""

from availmon.cache.layout import KeyLayout
from availmon.cache.rebuild import RebuildResult, rebuild_redis_view
from availmon.cache.redis_cache import RedisCache

__all__ = ["KeyLayout", "RebuildResult", "RedisCache", "rebuild_redis_view"]
