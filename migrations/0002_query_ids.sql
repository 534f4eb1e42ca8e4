-- Query ids are chosen by clients and must be unique across sessions (the
-- result endpoints look a query up by its id alone). This index lets the
-- pipeline refuse a `SubmitQuery` whose id another session already used,
-- inside the same transaction that would append it.
CREATE INDEX events_submitted_query_id
    ON events (json_extract(payload, '$.query_id'))
    WHERE event_type = 'QuerySubmitted';
