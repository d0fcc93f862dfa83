"""The root invoke collection: one namespace per module."""

from invoke import Collection

from ..config import DEFAULTS
from ..devconfig import DEV_DEFAULTS
from . import adopt, api, backup, dev, env, images, middleware, monitoring, prod, swarm, tls, web

ns = Collection()
for module in (env, images, monitoring, prod, tls, backup, adopt, swarm, dev, middleware, api, web):
    ns.add_collection(module.ns)
ns.configure({"difyops": {**DEFAULTS, **DEV_DEFAULTS}})
