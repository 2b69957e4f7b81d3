//! Execution records. Status changes go through [`ExecutionStore::transition`], an
//! UPDATE guarded by the statuses the new one may follow, so a late or repeated event
//! can never move an execution backwards, whatever order events are applied in.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use crate::model::{ExecutionName, NotifyTarget, Status};

use self::writer::{Op, Writer};
use super::leases::Ownership;
use super::schema::executions;
use super::{Db, StoreError};

/// Inserts a new execution's [`Row`] on a connection of either backend (the writer's
/// batches and the queue's admissions write the same columns).
macro_rules! insert_row {
    ($c:expr, $row:expr) => {{
        let row: &Row = $row;
        diesel::insert_into(executions::table)
            .values((
                executions::id.eq(&row.id),
                executions::name.eq(&row.name),
                executions::proc_name.eq(&row.proc_name),
                executions::image.eq(&row.image),
                executions::args.eq(&row.args),
                executions::status.eq(&row.status),
                executions::executor.eq(&row.executor),
                executions::user_email.eq(&row.user_email),
                executions::schedule_id.eq(&row.schedule_id),
                executions::created_at.eq(row.created_at),
                executions::updated_at.eq(row.updated_at),
                executions::callback_url.eq(&row.callback_url),
                executions::attempts.eq(row.attempts),
                executions::owner.eq(&row.owner),
                executions::lease_expires_at.eq(row.lease_expires_at),
                executions::notify.eq(&row.notify),
            ))
            .execute($c)
    }};
}

mod queue;
mod stats;
mod writer;

pub use self::queue::Admitted;
pub use self::stats::{Bucket, BucketCounts, ProcStats, Stats, StatsQuery};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = executions)]
struct Row {
    id: String,
    name: String,
    proc_name: String,
    image: String,
    args: String,
    status: String,
    reason: Option<String>,
    exit_code: Option<i32>,
    executor: String,
    user_email: String,
    schedule_id: Option<String>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    started_at: Option<NaiveDateTime>,
    finished_at: Option<NaiveDateTime>,
    callback_url: Option<String>,
    attempts: i32,
    owner: Option<String>,
    lease_expires_at: Option<NaiveDateTime>,
    notify: String,
    logs_purged_at: Option<NaiveDateTime>,
}

/// An execution as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Execution {
    #[serde(skip)]
    pub id: String,
    pub name: String,
    pub proc_name: String,
    pub image: String,
    pub args: BTreeMap<String, String>,
    pub status: Status,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub executor: String,
    pub user_email: String,
    /// The schedule that started it; absent for a run started by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    pub attempts: i32,
    #[serde(with = "utc")]
    pub created_at: NaiveDateTime,
    #[serde(with = "utc")]
    pub updated_at: NaiveDateTime,
    #[serde(with = "utc_option")]
    pub started_at: Option<NaiveDateTime>,
    #[serde(with = "utc_option")]
    pub finished_at: Option<NaiveDateTime>,
    #[serde(skip)]
    pub callback_url: Option<String>,
    /// The replica that follows it (while unfinished) or followed it last.
    #[serde(skip)]
    pub owner: Option<String>,
    /// When the owner's hold ends unless renewed.
    #[serde(skip)]
    pub lease_expires_at: Option<NaiveDateTime>,
    /// While QUEUED and waiting: how many runs of its proc wait ahead of it (shown by
    /// the single-execution reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i64>,
    /// Where its end is told (webhooks, Slack), URLs masked.
    #[serde(serialize_with = "crate::model::notify::serialize_masked")]
    pub notify: Vec<NotifyTarget>,
    /// When retention removed its log lines (the record is kept longer); absent while
    /// they are stored.
    #[serde(with = "utc_option", skip_serializing_if = "Option::is_none")]
    pub logs_purged_at: Option<NaiveDateTime>,
}

/// A stored (naive, UTC) time as RFC 3339 with `Z`.
pub fn serialize_utc<S: serde::Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    utc::serialize(t, s)
}

/// An optional stored time as RFC 3339 with `Z`, or null.
pub fn serialize_utc_option<S: serde::Serializer>(
    t: &Option<NaiveDateTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    utc_option::serialize(t, s)
}

/// Timestamps are stored naive in UTC and shown as RFC 3339 with `Z`.
mod utc {
    use chrono::NaiveDateTime;
    pub fn serialize<S: serde::Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            &t.and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        )
    }
}

mod utc_option {
    use chrono::NaiveDateTime;
    pub fn serialize<S: serde::Serializer>(
        t: &Option<NaiveDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::utc::serialize(t, s),
            None => s.serialize_none(),
        }
    }
}

impl TryFrom<Row> for Execution {
    type Error = StoreError;

    fn try_from(row: Row) -> Result<Self, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("execution {}: {what}", row.name));
        let status = row.status.parse().map_err(corrupt)?;
        let args = serde_json::from_str(&row.args).map_err(|e| corrupt(e.to_string()))?;
        let notify =
            serde_json::from_str(&row.notify).map_err(|e| corrupt(format!("notify: {e}")))?;
        Ok(Execution {
            id: row.id,
            name: row.name,
            proc_name: row.proc_name,
            image: row.image,
            args,
            status,
            reason: row.reason,
            exit_code: row.exit_code,
            executor: row.executor,
            user_email: row.user_email,
            schedule_id: row.schedule_id,
            attempts: row.attempts,
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            callback_url: row.callback_url,
            owner: row.owner,
            lease_expires_at: row.lease_expires_at,
            queue_position: None,
            notify,
            logs_purged_at: row.logs_purged_at,
        })
    }
}

/// What a new execution is made of (it starts RECEIVED).
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub name: ExecutionName,
    pub proc_name: String,
    pub image: String,
    pub args: BTreeMap<String, String>,
    pub executor: String,
    pub user_email: String,
    pub schedule_id: Option<String>,
    pub callback_url: Option<String>,
    pub notify: Vec<NotifyTarget>,
}

/// A status change with what it tells.
#[derive(Debug, Clone, Default)]
pub struct Transition {
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub attempts: Option<i32>,
}

/// Filters for [`ExecutionStore::list`]; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub proc_names: Option<Vec<String>>,
    pub status: Option<Status>,
    pub user_email: Option<String>,
    pub schedule_id: Option<String>,
    pub since: Option<NaiveDateTime>,
    pub until: Option<NaiveDateTime>,
    /// Only executions of these procs, or started by `or_user` (access control).
    pub visible_to: Option<(Vec<String>, String)>,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Clone)]
pub struct ExecutionStore {
    db: Db,
    /// Inserts and status changes, committed in groups (see [`writer`]).
    writer: Writer,
    /// This replica: it owns what it inserts, and writes only the statuses of what it owns.
    ownership: Ownership,
}

impl ExecutionStore {
    pub fn new(db: Db, ownership: Ownership) -> Self {
        Self {
            writer: Writer::start(db.clone(), ownership.replica.clone()),
            db,
            ownership,
        }
    }

    /// This replica's name and lease.
    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// Writes a new execution in RECEIVED; returns it once it is committed.
    pub async fn insert(&self, new: NewExecution) -> Result<Execution, StoreError> {
        let now = super::now();
        let row = Row {
            id: uuid::Uuid::new_v4().to_string(),
            name: new.name.as_str().to_owned(),
            proc_name: new.proc_name,
            image: new.image,
            args: serde_json::to_string(&new.args).expect("string maps serialize"),
            status: Status::Received.as_str().to_owned(),
            reason: None,
            exit_code: None,
            executor: new.executor,
            user_email: new.user_email,
            schedule_id: new.schedule_id,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            callback_url: new.callback_url,
            attempts: 0,
            owner: Some(self.ownership.replica.to_string()),
            lease_expires_at: Some(self.ownership.expiry()),
            notify: serde_json::to_string(&new.notify).expect("targets serialize"),
            logs_purged_at: None,
        };
        let execution = Execution::try_from(row.clone())?;
        self.writer.write(Op::Insert(Box::new(row))).await?;
        Ok(execution)
    }

    pub async fn get(&self, name: &str) -> Result<Option<Execution>, StoreError> {
        let name = name.to_owned();
        self.db
            .run(move |conn| {
                let row: Option<Row> = with_backend!(conn, |c| executions::table
                    .filter(executions::name.eq(&name))
                    .select(Row::as_select())
                    .first(c)
                    .optional())?;
                row.map(Execution::try_from).transpose()
            })
            .await
    }

    /// Moves the execution to `to` if that is a forward step from where it is and this
    /// replica owns it (or nobody does); returns the execution as written, or `None`
    /// when the step was refused (a no-op). A write that meets a database restart or a
    /// dropped connection is retried until it lands.
    pub async fn transition(
        &self,
        name: &str,
        to: Status,
        change: Transition,
    ) -> Result<Option<Execution>, StoreError> {
        let op = Op::Transition {
            name: name.to_owned(),
            to,
            change,
        };
        self.writer
            .write(op)
            .await?
            .map(Execution::try_from)
            .transpose()
    }

    /// Records the attempt count without changing the status.
    pub async fn set_attempts(&self, name: &str, attempts: i32) -> Result<(), StoreError> {
        let op = Op::Attempts {
            name: name.to_owned(),
            attempts,
        };
        self.writer.write(op).await.map(drop)
    }

    /// Newest first.
    pub async fn list(&self, filter: ExecutionFilter) -> Result<Vec<Execution>, StoreError> {
        self.db
            .run(move |conn| {
                let rows: Vec<Row> = with_backend!(conn, |c| {
                    let mut query = executions::table.select(Row::as_select()).into_boxed();
                    if let Some(procs) = &filter.proc_names {
                        query = query.filter(executions::proc_name.eq_any(procs));
                    }
                    if let Some(status) = filter.status {
                        query = query.filter(executions::status.eq(status.as_str()));
                    }
                    if let Some(user) = &filter.user_email {
                        query = query.filter(executions::user_email.eq(user));
                    }
                    if let Some(schedule) = &filter.schedule_id {
                        query = query.filter(executions::schedule_id.eq(schedule));
                    }
                    if let Some(since) = filter.since {
                        query = query.filter(executions::created_at.ge(since));
                    }
                    if let Some(until) = filter.until {
                        query = query.filter(executions::created_at.lt(until));
                    }
                    if let Some((procs, user)) = &filter.visible_to {
                        query = query.filter(
                            executions::proc_name
                                .eq_any(procs)
                                .or(executions::user_email.eq(user)),
                        );
                    }
                    query
                        .order((executions::created_at.desc(), executions::name.desc()))
                        .limit(filter.limit)
                        .offset(filter.offset)
                        .load(c)?
                });
                rows.into_iter().map(Execution::try_from).collect()
            })
            .await
    }

    /// Every execution not in a final state (for reconciliation at start-up).
    pub async fn unfinished(&self) -> Result<Vec<Execution>, StoreError> {
        let open = Status::unfinished_names();
        self.db
            .run(move |conn| {
                let rows: Vec<Row> = with_backend!(conn, |c| executions::table
                    .filter(executions::status.eq_any(&open))
                    .select(Row::as_select())
                    .order(executions::created_at)
                    .load(c))?;
                rows.into_iter().map(Execution::try_from).collect()
            })
            .await
    }
}
