"""difyops: a development environment and a clustered production deployment for Dify.

The invoke tasks in :mod:`difyops.tasks` are thin; the logic lives in the modules beside them and
can be tested without Docker.
"""

__version__ = "0.1.0"
