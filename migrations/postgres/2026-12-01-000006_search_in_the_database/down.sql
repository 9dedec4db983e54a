ALTER TABLE patients DROP COLUMN given_key;
ALTER TABLE patients DROP COLUMN family_key;
DROP INDEX patients_by_creator;
DROP INDEX flags_by_council;
