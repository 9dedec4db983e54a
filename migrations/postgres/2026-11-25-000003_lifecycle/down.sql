DROP INDEX patients_by_birth_date;
DROP INDEX flags_by_period_end;
