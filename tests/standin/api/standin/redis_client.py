# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Redis client built from Dify's REDIS_* variables: standalone, Sentinel or Cluster, connected the way
# Dify 1.13.3's extensions/ext_redis.py connects: no socket timeout, connect timeout or keepalive on
# the data connections (1.13.3 reads none; later 1.13.x releases add REDIS_SOCKET_TIMEOUT and
# friends), only the sentinels' REDIS_SENTINEL_SOCKET_TIMEOUT (Dify's default 0.1 s). So a
# connection to a lost primary is given up when the kernel says so, as in Dify
# (tests/standin/CONTRACT.md, "Redis connections").
import redis
import redis.sentinel

from standin import config

_client = None


def _sentinel_nodes():
    nodes = []
    for item in config.REDIS_SENTINELS.split(","):
        item = item.strip()
        if item:
            host, _, port = item.rpartition(":")
            nodes.append((host, int(port)))
    return nodes


def get():
    global _client
    if _client is not None:
        return _client
    common = dict(decode_responses=True)
    if config.REDIS_USE_SENTINEL:
        sentinel = redis.sentinel.Sentinel(
            _sentinel_nodes(),
            sentinel_kwargs={"username": config.REDIS_SENTINEL_USERNAME,
                             "password": config.REDIS_SENTINEL_PASSWORD,
                             "socket_timeout": config.REDIS_SENTINEL_SOCKET_TIMEOUT},
        )
        _client = sentinel.master_for(config.REDIS_SENTINEL_SERVICE_NAME, username=config.REDIS_USERNAME,
                                      password=config.REDIS_PASSWORD, db=config.REDIS_DB, **common)
    elif config.REDIS_USE_CLUSTERS:
        from redis.cluster import ClusterNode, RedisCluster

        nodes = []
        for item in config.REDIS_CLUSTERS.split(","):
            host, _, port = item.strip().rpartition(":")
            nodes.append(ClusterNode(host, int(port)))
        _client = RedisCluster(startup_nodes=nodes, password=config.REDIS_CLUSTERS_PASSWORD, **common)
    else:
        _client = redis.Redis(host=config.REDIS_HOST, port=config.REDIS_PORT, username=config.REDIS_USERNAME,
                              password=config.REDIS_PASSWORD, db=config.REDIS_DB, ssl=config.REDIS_USE_SSL,
                              **common)
    return _client
