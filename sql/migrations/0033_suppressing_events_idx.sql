-- suppress_from_events looks events up by id among those that suppress (`e.id = ANY(...) AND e.suppresses`).
-- The primary key is (id, occurred_at) since 0029, and the ids carry no month: every month partition's primary
-- key was probed for every id, and each event that suppresses nothing (nearly all) was read from the heap to
-- be dropped by the filter. This index holds only the few that suppress: a probe of it finds nothing for them.
CREATE INDEX mailjet_events_suppressing_idx ON mailjet_events (id) WHERE suppresses;
