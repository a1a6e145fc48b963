#!/bin/sh
# One Redis data node of deploy/compose.ha.yml. It runs from a config file on
# its volume, written at the first start, rather than from flags: Sentinel
# rewrites that file (CONFIG REWRITE) when it promotes or demotes the node,
# so a restarted node comes back as what Sentinel last made it, not as what
# compose first said.
#
# Environment: NODE_NAME (this node's service name), REPLICA_OF (the node to
# replicate at the first start; empty for the first primary), MAXMEMORY.
set -eu

conf=/data/redis.conf
if [ ! -f "$conf" ]; then
  echo "redis-node: first start: writing $conf"
  cat >"$conf" <<CONF
port 6379
dir /data
# Reached only over the compose network, by the replica, the Sentinels and
# the services.
protected-mode no
# Sentinel and the clients get this name, not the container's address, which
# changes whenever the container is recreated.
replica-announce-ip $NODE_NAME
# On disk, although it is a cache: a primary restarted empty before the
# Sentinels notice it was gone would be copied, empty, into its replica,
# and every fence the invalidator had confirmed on that replica would go.
appendonly yes
appendfsync everysec
save ""
maxmemory $MAXMEMORY
# Values and tombstones carry TTLs and may be evicted; docs/operations.md.
maxmemory-policy volatile-lru
CONF
  if [ -n "${REPLICA_OF:-}" ]; then
    echo "replicaof $REPLICA_OF 6379" >>"$conf"
  fi
fi
exec redis-server "$conf"
