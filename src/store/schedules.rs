//! Schedules and their fires. A fire is claimed by inserting `(schedule_id, fire_at)`
//! under its primary key: across any number of proctord replicas exactly one insert
//! succeeds, and only that replica dispatches.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::Serialize;

use crate::model::{NotifyTarget, Status};

use super::schema::{executions, schedule_fires, schedules};
use super::{Db, StoreError};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = schedules)]
struct Row {
    id: String,
    proc_name: String,
    args: String,
    cron: String,
    time_zone: String,
    notification_emails: String,
    tags: String,
    group_name: String,
    user_email: String,
    enabled: bool,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    concurrency_policy: String,
    notify: String,
}

/// A stored schedule, in the original's JSON shape (`name`, `time`, comma-separated
/// `notification_emails` and `tags`) plus the additions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Schedule {
    pub id: String,
    #[serde(rename = "name")]
    pub proc_name: String,
    pub args: BTreeMap<String, String>,
    #[serde(rename = "time")]
    pub cron: String,
    pub time_zone: String,
    pub notification_emails: String,
    pub tags: String,
    pub group_name: String,
    pub user_email: String,
    pub enabled: bool,
    pub concurrency_policy: String,
    /// Where each run's end is told (webhooks, Slack), URLs masked.
    #[serde(serialize_with = "crate::model::notify::serialize_masked")]
    pub notify: Vec<NotifyTarget>,
    #[serde(serialize_with = "super::executions::serialize_utc")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::executions::serialize_utc")]
    pub updated_at: NaiveDateTime,
}

impl Schedule {
    pub fn emails(&self) -> Vec<String> {
        self.notification_emails
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl TryFrom<Row> for Schedule {
    type Error = StoreError;

    fn try_from(row: Row) -> Result<Self, StoreError> {
        let args = serde_json::from_str(&row.args)
            .map_err(|e| StoreError::Corrupt(format!("schedule {}: args: {e}", row.id)))?;
        let notify = serde_json::from_str(&row.notify)
            .map_err(|e| StoreError::Corrupt(format!("schedule {}: notify: {e}", row.id)))?;
        Ok(Schedule {
            id: row.id,
            proc_name: row.proc_name,
            args,
            cron: row.cron,
            time_zone: row.time_zone,
            notification_emails: row.notification_emails,
            tags: row.tags,
            group_name: row.group_name,
            user_email: row.user_email,
            enabled: row.enabled,
            concurrency_policy: row.concurrency_policy,
            notify,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// What a new schedule is made of.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub proc_name: String,
    pub args: BTreeMap<String, String>,
    pub cron: String,
    pub time_zone: String,
    pub notification_emails: String,
    pub tags: String,
    pub group_name: String,
    pub user_email: String,
    pub concurrency_policy: String,
    pub notify: Vec<NotifyTarget>,
}

/// One fire of a schedule, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Serialize)]
pub struct Fire {
    pub schedule_id: String,
    #[serde(serialize_with = "super::executions::serialize_utc")]
    pub fire_at: NaiveDateTime,
    pub execution_id: Option<String>,
    pub outcome: String,
    /// When this replica's claim of the fire was written.
    #[serde(serialize_with = "super::executions::serialize_utc_option")]
    pub claimed_at: Option<NaiveDateTime>,
}

fn is_unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

#[derive(Clone)]
pub struct ScheduleStore {
    db: Db,
    /// A connection of the claims' own: a fire is claimed on time however busy the
    /// shared pool is.
    claims: Db,
}

impl ScheduleStore {
    pub fn new(db: Db) -> Self {
        Self {
            claims: db.reserved(),
            db,
        }
    }

    /// Stores a new schedule; `Ok(None)` when one with the same proc and args exists.
    pub async fn insert(&self, new: NewSchedule) -> Result<Option<Schedule>, StoreError> {
        self.db
            .run(move |conn| {
                let now = super::now();
                let row = Row {
                    id: uuid::Uuid::new_v4().to_string(),
                    proc_name: new.proc_name,
                    args: serde_json::to_string(&new.args).expect("string maps serialize"),
                    cron: new.cron,
                    time_zone: new.time_zone,
                    notification_emails: new.notification_emails,
                    tags: new.tags,
                    group_name: new.group_name,
                    user_email: new.user_email,
                    enabled: true,
                    created_at: now,
                    updated_at: now,
                    concurrency_policy: new.concurrency_policy,
                    notify: serde_json::to_string(&new.notify).expect("targets serialize"),
                };
                let inserted = with_backend!(conn, |c| diesel::insert_into(schedules::table)
                    .values((
                        schedules::id.eq(&row.id),
                        schedules::proc_name.eq(&row.proc_name),
                        schedules::args.eq(&row.args),
                        schedules::cron.eq(&row.cron),
                        schedules::time_zone.eq(&row.time_zone),
                        schedules::notification_emails.eq(&row.notification_emails),
                        schedules::tags.eq(&row.tags),
                        schedules::group_name.eq(&row.group_name),
                        schedules::user_email.eq(&row.user_email),
                        schedules::enabled.eq(true),
                        schedules::created_at.eq(now),
                        schedules::updated_at.eq(now),
                        schedules::concurrency_policy.eq(&row.concurrency_policy),
                        schedules::notify.eq(&row.notify),
                    ))
                    .execute(c));
                match inserted {
                    Ok(_) => Schedule::try_from(row).map(Some),
                    Err(e) if is_unique_violation(&e) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Schedule>, StoreError> {
        let id = id.to_owned();
        self.db
            .run(move |conn| {
                let row: Option<Row> = with_backend!(conn, |c| schedules::table
                    .find(&id)
                    .select(Row::as_select())
                    .first(c)
                    .optional())?;
                row.map(Schedule::try_from).transpose()
            })
            .await
    }

    /// Every schedule (or only the enabled ones), oldest first.
    pub async fn list(&self, only_enabled: bool) -> Result<Vec<Schedule>, StoreError> {
        self.db
            .run(move |conn| {
                let rows: Vec<Row> = with_backend!(conn, |c| {
                    let mut query = schedules::table.select(Row::as_select()).into_boxed();
                    if only_enabled {
                        query = query.filter(schedules::enabled.eq(true));
                    }
                    query
                        .order((schedules::created_at, schedules::id))
                        .load(c)?
                });
                rows.into_iter().map(Schedule::try_from).collect()
            })
            .await
    }

    /// The id and last update of every enabled schedule: what a replica compares with
    /// what it holds, to load only the schedules that changed.
    pub async fn manifest(&self) -> Result<Vec<(String, NaiveDateTime)>, StoreError> {
        self.db
            .run(|conn| {
                Ok(with_backend!(conn, |c| schedules::table
                    .filter(schedules::enabled.eq(true))
                    .select((schedules::id, schedules::updated_at))
                    .load(c))?)
            })
            .await
    }

    /// The schedules of `ids` that exist (in any order), read in chunks.
    pub async fn get_many(&self, ids: Vec<String>) -> Result<Vec<Schedule>, StoreError> {
        /// Ids in one query: well under SQLite's and PostgreSQL's bind limits.
        const CHUNK: usize = 500;
        self.db
            .run(move |conn| {
                let mut found = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(CHUNK) {
                    let rows: Vec<Row> = with_backend!(conn, |c| schedules::table
                        .filter(schedules::id.eq_any(chunk))
                        .select(Row::as_select())
                        .load(c))?;
                    for row in rows {
                        found.push(Schedule::try_from(row)?);
                    }
                }
                Ok(found)
            })
            .await
    }

    /// Changes whenever a schedule is created, changed or deleted: how many there are
    /// and their latest update (a cheap question for a replica that holds them all).
    pub async fn fingerprint(&self) -> Result<(i64, Option<NaiveDateTime>), StoreError> {
        self.db
            .run(|conn| {
                Ok(with_backend!(conn, |c| schedules::table
                    .select((
                        diesel::dsl::count_star(),
                        diesel::dsl::max(schedules::updated_at)
                    ))
                    .first::<(i64, Option<NaiveDateTime>)>(c))?)
            })
            .await
    }

    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.db
            .run(move |conn| {
                let removed = with_backend!(conn, |c| c.transaction(|c| {
                    diesel::delete(
                        schedule_fires::table.filter(schedule_fires::schedule_id.eq(&id)),
                    )
                    .execute(c)?;
                    diesel::delete(schedules::table.find(&id)).execute(c)
                }))?;
                Ok(removed > 0)
            })
            .await
    }

    pub async fn set_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Option<Schedule>, StoreError> {
        let id = id.to_owned();
        self.db
            .run(move |conn| {
                let row: Option<Row> = with_backend!(conn, |c| {
                    diesel::update(schedules::table.find(&id))
                        .set((
                            schedules::enabled.eq(enabled),
                            schedules::updated_at.eq(super::now()),
                        ))
                        .execute(c)?;
                    schedules::table
                        .find(&id)
                        .select(Row::as_select())
                        .first(c)
                        .optional()?
                });
                row.map(Schedule::try_from).transpose()
            })
            .await
    }

    /// Claims fires in one transaction; for each, true only for the one caller (of any
    /// replica) whose insert succeeded.
    pub async fn claim(
        &self,
        fires: Vec<(String, NaiveDateTime)>,
    ) -> Result<Vec<bool>, StoreError> {
        self.claims
            .run(move |conn| {
                let claimed_at = super::now();
                let claimed = with_backend!(conn, |c| c.transaction(|c| {
                    fires
                        .iter()
                        .map(|(id, fire_at)| {
                            diesel::insert_into(schedule_fires::table)
                                .values((
                                    schedule_fires::schedule_id.eq(id),
                                    schedule_fires::fire_at.eq(fire_at),
                                    schedule_fires::outcome.eq("claimed"),
                                    schedule_fires::claimed_at.eq(claimed_at),
                                ))
                                .on_conflict_do_nothing()
                                .execute(c)
                                .map(|inserted| inserted == 1)
                        })
                        .collect::<Result<Vec<bool>, DieselError>>()
                }))?;
                Ok(claimed)
            })
            .await
    }

    /// Records what became of claimed fires, all in one transaction:
    /// `(schedule id, fire_at, outcome, execution id)`.
    pub async fn record(
        &self,
        outcomes: Vec<(String, NaiveDateTime, String, Option<String>)>,
    ) -> Result<(), StoreError> {
        self.db
            .run(move |conn| {
                with_backend!(conn, |c| c.transaction(|c| {
                    for (id, fire_at, outcome, execution_id) in &outcomes {
                        diesel::update(schedule_fires::table.find((id, fire_at)))
                            .set((
                                schedule_fires::outcome.eq(outcome),
                                schedule_fires::execution_id.eq(execution_id),
                            ))
                            .execute(c)?;
                    }
                    QueryResult::Ok(())
                }))?;
                Ok(())
            })
            .await
    }

    /// The schedule's fires, oldest first.
    pub async fn fires(&self, id: &str) -> Result<Vec<Fire>, StoreError> {
        let id = id.to_owned();
        self.db
            .run(move |conn| {
                Ok(with_backend!(conn, |c| schedule_fires::table
                    .filter(schedule_fires::schedule_id.eq(&id))
                    .order(schedule_fires::fire_at)
                    .select((
                        schedule_fires::schedule_id,
                        schedule_fires::fire_at,
                        schedule_fires::execution_id,
                        schedule_fires::outcome,
                        schedule_fires::claimed_at,
                    ))
                    .load(c))?)
            })
            .await
    }

    /// The names of the schedule's runs that have not finished yet (queued included).
    pub async fn unfinished_runs(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let id = id.to_owned();
        let open = Status::unfinished_names();
        self.db
            .run(move |conn| {
                Ok(with_backend!(conn, |c| executions::table
                    .filter(executions::schedule_id.eq(&id))
                    .filter(executions::status.eq_any(&open))
                    .select(executions::name)
                    .load(c))?)
            })
            .await
    }

    /// Whether a run of the schedule has not finished yet.
    pub async fn has_unfinished_run(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let open = Status::unfinished_names();
        self.db
            .run(move |conn| {
                let count: i64 = with_backend!(conn, |c| executions::table
                    .filter(executions::schedule_id.eq(&id))
                    .filter(executions::status.eq_any(&open))
                    .count()
                    .get_result(c))?;
                Ok(count > 0)
            })
            .await
    }
}
