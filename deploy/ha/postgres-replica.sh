#!/usr/bin/env bash
# Entrypoint of the streaming replica of deploy/compose.ha.yml. At the first
# start (an empty volume) it clones the primary with pg_basebackup -R, which
# also writes standby.signal and primary_conninfo (with the slot); every
# start then runs the command compose gives (postgres and its settings).
#
# Environment: PGDATA, PRIMARY_HOST, REPLICATION_SLOT, and PGUSER and
# PGPASSWORD for the replication role.
set -euo pipefail

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  # Into a scratch directory, renamed when complete: a clone cut short must
  # not look like a data directory at the next start.
  partial="$PGDATA.partial"
  rm -rf "$partial"
  echo "postgres-replica: first start: pg_basebackup from $PRIMARY_HOST through slot $REPLICATION_SLOT"
  pg_basebackup --host="$PRIMARY_HOST" --pgdata="$partial" --wal-method=stream \
    --slot="$REPLICATION_SLOT" --write-recovery-conf --checkpoint=fast --no-password
  chmod 0700 "$partial"
  rm -rf "$PGDATA"
  mv "$partial" "$PGDATA"
  echo "postgres-replica: clone complete"
fi
exec "$@"
