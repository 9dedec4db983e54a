-- The record lifecycle (DOMAIN.md "Retention"): the scheduled run finds plans that have ended and
-- records past retention through this index instead of reading every Flag. Flags are not written
-- on the look-up path, so it costs the look-up nothing. (People turning 18 are found by a scan
-- of the child plans joined to their people: an index on dates of birth would cost every bulk
-- load more than the scan costs one run.)
CREATE INDEX flags_by_period_end ON flags (period_end);
