DROP TABLE audit_index;
DROP TABLE audit_flags;
