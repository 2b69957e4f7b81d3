//! One portable schema for PostgreSQL and SQLite (`migrations/{postgres,sqlite}`):
//! ids and JSON are `Text`, times are UTC `Timestamp`s.

diesel::table! {
    users (email) {
        email -> Text,
        is_admin -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    user_groups (user_email, group_name) {
        user_email -> Text,
        group_name -> Text,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        user_email -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        name -> Text,
        expires_at -> Nullable<Timestamp>,
        last_used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    procs (name) {
        name -> Text,
        metadata -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    proc_secrets (proc_name, secret_name) {
        proc_name -> Text,
        secret_name -> Text,
        sealed -> Binary,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    schedules (id) {
        id -> Text,
        proc_name -> Text,
        args -> Text,
        cron -> Text,
        time_zone -> Text,
        notification_emails -> Text,
        tags -> Text,
        group_name -> Text,
        user_email -> Text,
        enabled -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        concurrency_policy -> Text,
        notify -> Text,
    }
}

diesel::table! {
    executions (id) {
        id -> Text,
        name -> Text,
        proc_name -> Text,
        image -> Text,
        args -> Text,
        status -> Text,
        reason -> Nullable<Text>,
        exit_code -> Nullable<Integer>,
        executor -> Text,
        user_email -> Text,
        schedule_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        callback_url -> Nullable<Text>,
        attempts -> Integer,
        owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        notify -> Text,
        logs_purged_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    execution_logs (execution_id, seq) {
        execution_id -> Text,
        seq -> BigInt,
        line -> Text,
        logged_at -> Timestamp,
        pod -> Nullable<Text>,
        emitted_ns -> Nullable<BigInt>,
    }
}

diesel::table! {
    schedule_fires (schedule_id, fire_at) {
        schedule_id -> Text,
        fire_at -> Timestamp,
        execution_id -> Nullable<Text>,
        outcome -> Text,
        claimed_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(user_groups -> users (user_email));
diesel::joinable!(api_tokens -> users (user_email));
diesel::joinable!(execution_logs -> executions (execution_id));
diesel::joinable!(schedule_fires -> schedules (schedule_id));

diesel::table! {
    console_sessions (id_hash) {
        id_hash -> Text,
        user_email -> Text,
        token_id -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::joinable!(console_sessions -> users (user_email));

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        at -> Timestamp,
        actor -> Text,
        address -> Nullable<Text>,
        action -> Text,
        kind -> Text,
        object -> Text,
        details -> Text,
    }
}

diesel::table! {
    notification_deliveries (id) {
        id -> BigInt,
        execution_id -> Text,
        kind -> Text,
        target -> Text,
        status -> Text,
        attempts -> Integer,
        target_index -> Integer,
        last_status_code -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(notification_deliveries -> executions (execution_id));

diesel::allow_tables_to_appear_in_same_query!(
    notification_deliveries,
    audit_events,
    console_sessions,
    users,
    user_groups,
    api_tokens,
    procs,
    proc_secrets,
    schedules,
    executions,
    execution_logs,
    schedule_fires,
);
