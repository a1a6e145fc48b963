-- The outbox is a queue table: every write inserts a row and the relay
-- deletes it moments later, so it is almost all dead rows unless vacuumed
-- often. The relay claims with `ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED`,
-- which walks past every dead row at the head of the index: measured on the
-- benchmark machine (autovacuum off), 320,000 dead rows made Postgres spend
-- 3.7 ms of CPU per write instead of about 1. The default trigger (20 % of
-- the table plus 50 rows) never fires on a table that is nearly empty when
-- live, so vacuum it by a fixed number of dead rows instead, without the
-- cost delay (the table is tiny once vacuumed).
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
