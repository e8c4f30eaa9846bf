"""The in-process Python API; the HTTP API and the CLI are thin layers over these classes.

    service = AvailabilityService(repo, fleet)
    endpoint = await service.create_endpoint({"name": "web", "url": "https://example.net/"})
    result = await service.check_service(endpoint.id)

Validation errors are `ValidationFailed` with the same field errors the HTTP API returns.
"""

from availmon.errors import NotFound
from availmon.services.availability import MAX_PAGE, AvailabilityService, Fleet, validate_endpoint
from availmon.services.collector import ServiceAvailabilityCollector
from availmon.services.maintenance import MaintenanceService
from availmon.services.outages import OutageManagementService, OutagePatch

__all__ = [
    "MAX_PAGE",
    "AvailabilityService",
    "Fleet",
    "MaintenanceService",
    "NotFound",
    "OutageManagementService",
    "OutagePatch",
    "ServiceAvailabilityCollector",
    "validate_endpoint",
]
