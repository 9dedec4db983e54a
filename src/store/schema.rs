//! Diesel table definitions; kept by hand in step with `migrations/` (both backends share them).

diesel::table! {
    local_authorities (ods_code) {
        ods_code -> Text,
        name -> Text,
        office_phone -> Text,
        emergency_phone -> Text,
        active -> Bool,
        version -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    patients (nhs_number) {
        nhs_number -> Text,
        family -> Text,
        given -> Text,
        birth_date -> Text,
        address_lines -> Nullable<Text>,
        address_city -> Nullable<Text>,
        address_district -> Nullable<Text>,
        address_postal_code -> Nullable<Text>,
        created_by -> Text,
        version -> BigInt,
        updated_at -> BigInt,
        family_key -> Nullable<Text>,
        given_key -> Nullable<Text>,
    }
}

diesel::table! {
    flags (id) {
        id -> Text,
        nhs_number -> Text,
        la_ods -> Text,
        local_ref_system -> Text,
        local_ref_value -> Text,
        plan_type -> Text,
        status -> Text,
        period_start -> Text,
        period_end -> Nullable<Text>,
        version -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    flag_versions (flag_id, version) {
        flag_id -> Text,
        version -> BigInt,
        nhs_number -> Text,
        la_ods -> Text,
        local_ref_system -> Text,
        local_ref_value -> Text,
        plan_type -> Text,
        status -> Text,
        period_start -> Text,
        period_end -> Nullable<Text>,
        recorded_at -> BigInt,
        method -> Text,
    }
}

diesel::joinable!(flags -> patients (nhs_number));
diesel::joinable!(flags -> local_authorities (la_ods));
diesel::allow_tables_to_appear_in_same_query!(
    local_authorities,
    patients,
    flags,
    flag_versions,
    audit_events,
    audit_flags,
    audit_patients,
    audit_users,
    audit_orgs,
    audit_index,
    subscriptions,
    notifications,
    notification_outbox,
    exports
);

diesel::table! {
    exports (id) {
        id -> Text,
        user_id -> Text,
        client -> Text,
        request -> Text,
        filter -> Text,
        status -> Text,
        created -> BigInt,
        updated -> BigInt,
        written -> BigInt,
        files -> Text,
        error -> Nullable<Text>,
        expires -> Nullable<BigInt>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        recorded -> BigInt,
        resource_type -> Text,
        subtype -> Text,
        outcome -> Text,
        outcome_desc -> Nullable<Text>,
        user_id -> Text,
        user_name -> Nullable<Text>,
        user_role -> Text,
        user_org -> Text,
        client -> Text,
        patient -> Nullable<Text>,
        councils -> Text,
        disclosed -> Text,
        request_id -> Text,
        trace_id -> Nullable<Text>,
        unscheduled -> Bool,
        listed -> Bool,
        query -> Text,
    }
}

diesel::table! {
    /// Each Flag an access disclosed, keyed by the Flag (the `entity` search).
    audit_flags (flag_id, audit_id) {
        flag_id -> Text,
        audit_id -> Text,
    }
}

diesel::table! {
    /// Each access's person, keyed by the person (the audit team's `patient` search).
    audit_patients (patient, audit_id) {
        patient -> Text,
        audit_id -> Text,
    }
}

diesel::table! {
    /// Each access's user, keyed by the user (the audit team's `agent` search).
    audit_users (user_id, audit_id) {
        user_id -> Text,
        audit_id -> Text,
    }
}

diesel::table! {
    /// Each access's organisation, keyed by the organisation (the `agent-org` search).
    audit_orgs (user_org, audit_id) {
        user_org -> Text,
        audit_id -> Text,
    }
}

diesel::table! {
    /// How far the audit trail has been indexed: by `flags` and by `patients`, every row with an
    /// id up to `through`.
    audit_index (name) {
        name -> Text,
        through -> Text,
    }
}

diesel::table! {
    subscriptions (id) {
        id -> Text,
        council -> Text,
        status -> Text,
        reason -> Text,
        end_at -> Nullable<BigInt>,
        endpoint -> Text,
        headers -> Text,
        content -> Text,
        heartbeat_secs -> Nullable<BigInt>,
        timeout_secs -> BigInt,
        max_count -> BigInt,
        secret -> Text,
        event_count -> BigInt,
        delivered_through -> BigInt,
        error -> Nullable<Text>,
        attempts -> BigInt,
        next_attempt_at -> BigInt,
        last_sent_at -> Nullable<BigInt>,
        heartbeat_at -> Nullable<BigInt>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<BigInt>,
        created_at -> BigInt,
        version -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    notifications (subscription_id, event_number) {
        subscription_id -> Text,
        event_number -> BigInt,
        audit_event_id -> Text,
        recorded -> BigInt,
    }
}

diesel::table! {
    notification_outbox (id) {
        id -> BigInt,
        audit_event_id -> Text,
        councils -> Text,
        recorded -> BigInt,
    }
}
