from pathlib import Path

import environ

from config.envvars import Env

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = Env()
# A local .env is read when present (development only; production sets real variables).
# Variables already in the environment win over it.
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Redis for cache, rate limits, idempotency, channel layer and Celery broker. Unset: embedded.
REDIS_URL = env.str("REDIS_URL", default="")
