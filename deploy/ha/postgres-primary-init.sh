# shellcheck shell=bash
# Sourced by the postgres image's entrypoint at the primary's first start
# (an empty volume), after initdb: the role the replica streams with, its
# replication slot, and the pg_hba.conf line that lets it in over the network.
#
# The slot is created here, reserving WAL at once, rather than by the
# replica's pg_basebackup: WAL written before the replica first starts is
# kept, and a replica whose volume was wiped clones again through the same
# slot. Environment: REPLICATION_PASSWORD, REPLICATION_SLOT.

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$REPLICATION_PASSWORD" -v slot="$REPLICATION_SLOT" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SELECT pg_create_physical_replication_slot(:'slot', true);
SQL

# After the image's own "host all all all scram-sha-256" line, which does not
# cover replication connections.
printf 'host replication replicator all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
