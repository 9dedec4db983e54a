DROP TABLE flag_versions;
DROP TABLE flags;
DROP TABLE patients;
DROP TABLE local_authorities;
