"""availmon: service-availability monitoring daemon."""

__version__ = "0.1.0"
