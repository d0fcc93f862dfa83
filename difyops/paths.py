"""Where the bundle's files live: the repository root holds compose/, nginx/, images/ and .env."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "compose"
NGINX_DIR = ROOT / "nginx"
IMAGES_DIR = ROOT / "images"
MONITORING_DIR = ROOT / "monitoring"
ENV_EXAMPLE = ROOT / ".env.example"
DEFAULT_ENV_FILE = ROOT / ".env"
