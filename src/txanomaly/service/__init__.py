"""The REST service: FastAPI app factory, SageMaker routes, Lambda handler (docs/service.md).

>>> from txanomaly.service import create_app  # builds nothing until called
"""

from txanomaly.service.app import create_app
from txanomaly.service.settings import Settings, get_settings

__all__ = ["Settings", "create_app", "get_settings"]
