-- Searches run their conditions and keyset paging in the database (FHIR R4 §3.1.1.2).
-- A council's Flags in id order, so a page of them is an index range.
CREATE INDEX flags_by_council ON flags (la_ods, id);
-- The people a council submitted, for its name search.
CREATE INDEX patients_by_creator ON patients (created_by, nhs_number);
-- Names folded for a case-insensitive prefix search: Unicode lower case is the server's to
-- compute (SQLite's lower() folds ASCII only), so it writes these with every Patient, and
-- fills them for rows stored before this migration when it opens the database.
ALTER TABLE patients ADD COLUMN family_key TEXT;
ALTER TABLE patients ADD COLUMN given_key TEXT;
