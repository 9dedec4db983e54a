-- The CP-IS domain (DESIGN.md "Domain tables"). There is deliberately no column that could
-- hold a reason for a plan, a note or free text (DOMAIN.md "Never held").
CREATE TABLE local_authorities (
    ods_code        TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL,
    office_phone    TEXT NOT NULL,
    emergency_phone TEXT NOT NULL,
    active          BOOLEAN NOT NULL,
    version         BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE patients (
    nhs_number          TEXT PRIMARY KEY NOT NULL,
    family              TEXT NOT NULL,
    given               TEXT NOT NULL,
    birth_date          TEXT NOT NULL,
    address_lines       TEXT,
    address_city        TEXT,
    address_district    TEXT,
    address_postal_code TEXT,
    created_by          TEXT NOT NULL,
    version             BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);

CREATE TABLE flags (
    id               TEXT PRIMARY KEY NOT NULL,
    nhs_number       TEXT NOT NULL REFERENCES patients (nhs_number),
    la_ods           TEXT NOT NULL REFERENCES local_authorities (ods_code),
    local_ref_system TEXT NOT NULL,
    local_ref_value  TEXT NOT NULL,
    plan_type        TEXT NOT NULL,
    status           TEXT NOT NULL,
    period_start     TEXT NOT NULL,
    period_end       TEXT,
    version          BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (la_ods, local_ref_system, local_ref_value)
);
CREATE INDEX flags_by_nhs_number ON flags (nhs_number);

-- Every version of every Flag, so that what was disclosed at any moment can be shown again.
CREATE TABLE flag_versions (
    flag_id          TEXT NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    version          BIGINT NOT NULL,
    nhs_number       TEXT NOT NULL,
    la_ods           TEXT NOT NULL,
    local_ref_system TEXT NOT NULL,
    local_ref_value  TEXT NOT NULL,
    plan_type        TEXT NOT NULL,
    status           TEXT NOT NULL,
    period_start     TEXT NOT NULL,
    period_end       TEXT,
    recorded_at      BIGINT NOT NULL,
    method           TEXT NOT NULL,
    PRIMARY KEY (flag_id, version)
);
