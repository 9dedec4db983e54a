DROP INDEX flags_by_period_end;
