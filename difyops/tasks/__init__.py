"""The root invoke collection: one namespace per module."""

from invoke import Collection

from ..config import DEFAULTS
from . import env, images, monitoring, prod

ns = Collection()
for module in (env, images, monitoring, prod):
    ns.add_collection(module.ns)
ns.configure({"difyops": dict(DEFAULTS)})
