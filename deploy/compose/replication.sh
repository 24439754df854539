#!/bin/sh
# Run by the postgres image once, when it creates the primary's data directory
# (deploy/compose/cluster.yml): let the replica stream the WAL (trust, like the rest of this
# local-development setup; wal_level is `replica` by default).
set -e
echo "host replication all all trust" >> "$PGDATA/pg_hba.conf"
