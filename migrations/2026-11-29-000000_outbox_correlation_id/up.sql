-- The request id of the write that caused each event: published as the AMQP
-- correlation_id, so one grep of the logs follows a change from write-api to
-- every cache it fenced. NULL for changes made outside write-api.
ALTER TABLE outbox ADD COLUMN correlation_id TEXT;
