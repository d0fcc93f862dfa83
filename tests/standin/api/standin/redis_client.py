# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Redis client built from Dify's REDIS_* variables: standalone, Sentinel or Cluster.
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
    common = dict(socket_timeout=5, socket_connect_timeout=5, decode_responses=True)
    if config.REDIS_USE_SENTINEL:
        sentinel = redis.sentinel.Sentinel(
            _sentinel_nodes(),
            sentinel_kwargs={"username": config.REDIS_SENTINEL_USERNAME,
                             "password": config.REDIS_SENTINEL_PASSWORD, "socket_timeout": 5},
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
