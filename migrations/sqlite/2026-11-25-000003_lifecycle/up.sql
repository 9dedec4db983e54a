-- The record lifecycle (DOMAIN.md "Retention"): the scheduled run finds plans that have ended,
-- people turning 18 and records past retention through these, instead of reading every row.
-- None of these tables is written on the look-up path, so the indexes cost it nothing.
CREATE INDEX flags_by_period_end ON flags (period_end);
CREATE INDEX patients_by_birth_date ON patients (birth_date);
