# isort: skip_file
"""Settings, composed from small modules. Every value comes from the environment.

With nothing set the app runs embedded (SQLite, local memory, in-process Celery);
``DATABASE_URL`` and ``REDIS_URL`` switch it to PostgreSQL and Redis.
"""

from .base import *  # noqa: F401,F403
from .security import *  # noqa: F401,F403
from .api import *  # noqa: F401,F403
from .channels import *  # noqa: F401,F403
from .agent import *  # noqa: F401,F403
from .celery import *  # noqa: F401,F403
from .audits import *  # noqa: F401,F403
from .files import *  # noqa: F401,F403
from .hub import *  # noqa: F401,F403
from .observability import *  # noqa: F401,F403
