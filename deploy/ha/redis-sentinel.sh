#!/bin/sh
# One Redis Sentinel of deploy/compose.ha.yml. Like the data nodes, it runs
# from a config file on its volume, written at the first start: Sentinel
# rewrites it with what it learns (the current primary, its replicas, the
# other Sentinels), so a restarted Sentinel remembers a failover.
#
# Environment: NODE_NAME (this Sentinel's service name), MASTER_HOST (the
# first primary).
set -eu

conf=/data/sentinel.conf
if [ ! -f "$conf" ]; then
  echo "redis-sentinel: first start: writing $conf"
  cat >"$conf" <<CONF
port 26379
protected-mode no
# Service names rather than container addresses, which change whenever a
# container is recreated; the clients are told names too.
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $NODE_NAME
# Master name "catalog", quorum 2 of the 3 Sentinels.
sentinel monitor catalog $MASTER_HOST 6379 2
# A primary silent for 5 s is down; a failover then takes a few seconds more.
sentinel down-after-milliseconds catalog 5000
sentinel failover-timeout catalog 30000
sentinel parallel-syncs catalog 1
CONF
fi
exec redis-server "$conf" --sentinel
