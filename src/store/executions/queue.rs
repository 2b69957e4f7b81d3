//! The run queue of procs with `max_concurrent_runs`. The queue is the executions
//! table itself: a run that finds no free slot is stored QUEUED with no owner, and the
//! unowned QUEUED rows of a proc, by `(created_at, id)`, are its queue. A slot is held
//! by every RECEIVED, CREATED or RUNNING run of the proc and by a QUEUED run that has
//! an owner (promoted, about to be launched by that replica).
//!
//! Admitting and promoting count the slots and write in one transaction under a
//! per-proc lock (PostgreSQL: `pg_advisory_xact_lock` on the proc's name, so any number
//! of replicas agree; SQLite: an immediate transaction, one replica), so the bound
//! holds across replicas and the order is the order of admission.

use diesel::prelude::*;

use super::{Execution, NewExecution, Row};
use crate::model::Status;
use crate::store::schema::executions;
use crate::store::{DbConnection, StoreError};

/// Where a new run of a proc with a limit went.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// RECEIVED and owned here (a slot was free and nobody waited), or QUEUED.
    pub execution: Execution,
    /// Whether a slot is free although the run was queued (runs ahead of it wait for
    /// a promotion that has not happened yet): promote now.
    pub promote: bool,
}

/// Runs `$body` in a transaction holding the queue lock of `$proc`.
macro_rules! locked {
    ($conn:expr, $proc:expr, |$c:ident| $body:expr) => {
        match $conn {
            DbConnection::Postgresql($c) => $c.transaction(|$c| {
                diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind::<diesel::sql_types::Text, _>(format!("proctor.queue.{}", $proc))
                    .execute($c)?;
                $body
            }),
            DbConnection::Sqlite($c) => $c.immediate_transaction(|$c| $body),
        }
    };
}

/// The statuses that hold a slot whatever their owner.
const ACTIVE: [&str; 3] = ["RECEIVED", "CREATED", "RUNNING"];

/// `(slots held, runs waiting)` for `proc` (a macro: two backends).
macro_rules! occupancy {
    ($c:ident, $proc:expr) => {{
        let held: i64 = executions::table
            .filter(executions::proc_name.eq($proc))
            .filter(
                executions::status.eq_any(ACTIVE).or(executions::status
                    .eq(Status::Queued.as_str())
                    .and(executions::owner.is_not_null())),
            )
            .count()
            .get_result($c)?;
        let waiting: Option<chrono::NaiveDateTime> = executions::table
            .filter(executions::proc_name.eq($proc))
            .filter(executions::status.eq(Status::Queued.as_str()))
            .filter(executions::owner.is_null())
            .select(diesel::dsl::max(executions::created_at))
            .get_result($c)?;
        (held, waiting)
    }};
}

impl super::ExecutionStore {
    /// Writes a new run of a proc allowing `max` at once: RECEIVED and owned by this
    /// replica when a slot is free and no run waits, else QUEUED with no owner, behind
    /// every run already waiting.
    pub async fn admit(&self, new: NewExecution, max: u32) -> Result<Admitted, StoreError> {
        let me = self.ownership.replica.to_string();
        let until = self.ownership.expiry();
        let proc = new.proc_name.clone();
        self.db
            .run(move |conn| {
                let row = locked!(conn, proc, |c| {
                    let (held, last_waiting) = occupancy!(c, &proc);
                    let now = crate::store::now();
                    let free = held < i64::from(max);
                    let start = free && last_waiting.is_none();
                    // Behind the last waiting run even when this replica's clock is
                    // behind the one that queued it: the queue's order is admission's.
                    let created_at = match last_waiting {
                        Some(last) if !start && last >= now => {
                            last + chrono::TimeDelta::microseconds(1)
                        }
                        _ => now,
                    };
                    let row = Row {
                        id: uuid::Uuid::new_v4().to_string(),
                        name: new.name.as_str().to_owned(),
                        proc_name: new.proc_name.clone(),
                        image: new.image.clone(),
                        args: serde_json::to_string(&new.args).expect("string maps serialize"),
                        status: if start {
                            Status::Received
                        } else {
                            Status::Queued
                        }
                        .as_str()
                        .to_owned(),
                        reason: None,
                        exit_code: None,
                        executor: new.executor.clone(),
                        user_email: new.user_email.clone(),
                        schedule_id: new.schedule_id.clone(),
                        created_at,
                        updated_at: now,
                        started_at: None,
                        finished_at: None,
                        callback_url: new.callback_url.clone(),
                        notify: serde_json::to_string(&new.notify).expect("targets serialize"),
                        logs_purged_at: None,
                        attempts: 0,
                        owner: start.then(|| me.clone()),
                        lease_expires_at: start.then_some(until),
                    };
                    insert_row!(c, &row)?;
                    Ok::<_, diesel::result::Error>((row, free && !start))
                })?;
                let (row, promote) = row;
                Ok(Admitted {
                    execution: Execution::try_from(row)?,
                    promote,
                })
            })
            .await
    }

    /// Takes the oldest waiting runs of `proc` into the free slots of `max` (every
    /// waiting run when `None`: the proc lost its limit or is gone), making this replica
    /// their owner; answers them, oldest first, still QUEUED: the caller launches them.
    pub async fn promote(
        &self,
        proc: &str,
        max: Option<u32>,
    ) -> Result<Vec<Execution>, StoreError> {
        let me = self.ownership.replica.to_string();
        let until = self.ownership.expiry();
        let proc = proc.to_owned();
        self.db
            .run(move |conn| {
                let rows: Vec<Row> = locked!(conn, proc, |c| {
                    let (held, last_waiting) = occupancy!(c, &proc);
                    if last_waiting.is_none() {
                        return Ok(Vec::new());
                    }
                    let free = match max {
                        Some(max) => (i64::from(max) - held).max(0),
                        None => 10_000,
                    };
                    if free == 0 {
                        return Ok(Vec::new());
                    }
                    let ids: Vec<String> = executions::table
                        .filter(executions::proc_name.eq(&proc))
                        .filter(executions::status.eq(Status::Queued.as_str()))
                        .filter(executions::owner.is_null())
                        .order((executions::created_at, executions::id))
                        .limit(free)
                        .select(executions::id)
                        .load(c)?;
                    diesel::update(executions::table.filter(executions::id.eq_any(&ids)))
                        .set((
                            executions::owner.eq(&me),
                            executions::lease_expires_at.eq(until),
                            executions::updated_at.eq(crate::store::now()),
                        ))
                        .execute(c)?;
                    executions::table
                        .filter(executions::id.eq_any(&ids))
                        .order((executions::created_at, executions::id))
                        .select(Row::as_select())
                        .load(c)
                })?;
                rows.into_iter().map(Execution::try_from).collect()
            })
            .await
    }

    /// Whether runs of `proc` wait (without a lock: a hint that a promotion is worth
    /// trying).
    pub async fn has_waiting(&self, proc: &str) -> Result<bool, StoreError> {
        let proc = proc.to_owned();
        self.db
            .run(move |conn| {
                let count: i64 = with_backend!(conn, |c| executions::table
                    .filter(executions::proc_name.eq(&proc))
                    .filter(executions::status.eq(Status::Queued.as_str()))
                    .filter(executions::owner.is_null())
                    .count()
                    .get_result(c))?;
                Ok(count > 0)
            })
            .await
    }

    /// The procs that have runs waiting.
    pub async fn queued_procs(&self) -> Result<Vec<String>, StoreError> {
        self.db
            .run(move |conn| {
                Ok(with_backend!(conn, |c| executions::table
                    .filter(executions::status.eq(Status::Queued.as_str()))
                    .filter(executions::owner.is_null())
                    .select(executions::proc_name)
                    .distinct()
                    .load(c))?)
            })
            .await
    }

    /// How many runs wait ahead of `execution` when it waits in its proc's queue.
    pub async fn queue_position(&self, execution: &Execution) -> Result<Option<i64>, StoreError> {
        if execution.status != Status::Queued || execution.owner.is_some() {
            return Ok(None);
        }
        let (proc, created_at, id) = (
            execution.proc_name.clone(),
            execution.created_at,
            execution.id.clone(),
        );
        self.db
            .run(move |conn| {
                let ahead: i64 = with_backend!(conn, |c| executions::table
                    .filter(executions::proc_name.eq(&proc))
                    .filter(executions::status.eq(Status::Queued.as_str()))
                    .filter(executions::owner.is_null())
                    .filter(
                        executions::created_at
                            .lt(created_at)
                            .or(executions::created_at
                                .eq(created_at)
                                .and(executions::id.lt(&id))),
                    )
                    .count()
                    .get_result(c))?;
                Ok(Some(ahead))
            })
            .await
    }
}
