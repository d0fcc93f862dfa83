"""invoke entry point: `invoke --list` shows every namespace. The logic lives in difyops/."""

from difyops.tasks import ns  # noqa: F401
