//! Who follows each unfinished execution. Every unfinished execution names one owner
//! (a replica id made at start-up) and a lease expiry; the owner renews all its leases
//! with one statement per beat ([`LeaseStore::renew`]), and a replica takes a run only
//! through one conditional update on an expired lease ([`LeaseStore::claim_expired`]),
//! so a run never has two owners. Times are the replicas' own clocks (UTC): they must
//! agree to within a small part of the lease, as NTP keeps them.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::executions;
use super::{Db, DbConnection, StoreError};
use crate::model::Status;

/// The unfinished statuses as SQL, spelled out so PostgreSQL uses the partial indexes
/// of migration `2026-12-03-000004_leases` (a bound array would not match them; migration
/// `2026-12-03-000010_run_queue` recreated them with QUEUED). A QUEUED run is owned
/// only once promoted; a waiting one has no owner and no lease.
const OPEN: &str = "status IN ('RECEIVED', 'QUEUED', 'CREATED', 'RUNNING')";
/// Runs waiting in a queue belong to nobody: a claim never takes them.
const NOT_WAITING: &str = "(status <> 'QUEUED' OR owner IS NOT NULL)";
/// Executions taken in one claim at most; the next claim takes more.
const CLAIM_BATCH: i64 = 500;

/// This replica and how long its hold on a run lasts.
#[derive(Debug, Clone)]
pub struct Ownership {
    pub replica: Arc<str>,
    pub lease: Duration,
}

impl Ownership {
    /// When a lease taken or renewed now ends.
    pub fn expiry(&self) -> NaiveDateTime {
        super::now() + chrono::TimeDelta::from_std(self.lease).unwrap_or(chrono::TimeDelta::MAX)
    }
}

/// An execution this replica has just taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub name: String,
    pub executor: String,
    pub status: Status,
    /// Who held it before (`None` for executions older than leases).
    pub previous_owner: Option<String>,
}

#[derive(Clone)]
pub struct LeaseStore {
    /// A connection of its own: a beat never queues behind the pool.
    db: Db,
    ownership: Ownership,
}

/// What a claim reads of each run it takes.
type ClaimRow = (String, String, String, String, Option<String>);

/// Makes `me` the owner of the claimed rows until `until` (a macro: the two backends'
/// connections are different types).
macro_rules! take {
    ($c:ident, $rows:expr, $me:expr, $until:expr) => {{
        let ids: Vec<&str> = $rows.iter().map(|r| r.0.as_str()).collect();
        if !ids.is_empty() {
            diesel::update(executions::table.filter(executions::id.eq_any(ids)))
                .set((
                    executions::owner.eq($me.as_str()),
                    executions::lease_expires_at.eq($until),
                ))
                .execute($c)?;
        }
    }};
}

impl LeaseStore {
    pub fn new(db: &Db, ownership: Ownership) -> Self {
        Self {
            db: db.reserved(),
            ownership,
        }
    }

    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// Renews this replica's leases on all its unfinished executions in one statement;
    /// returns the names it still owns.
    pub async fn renew(&self) -> Result<Vec<String>, StoreError> {
        let me = self.ownership.replica.to_string();
        let until = self.ownership.expiry();
        self.db
            .run(move |conn| {
                Ok(with_backend!(conn, |c| diesel::update(
                    executions::table
                        .filter(executions::owner.eq(&me))
                        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(OPEN)),
                )
                .set(executions::lease_expires_at.eq(until))
                .returning(executions::name)
                .get_results(c))?)
            })
            .await
    }

    /// Takes over unfinished executions whose lease has expired (or that never had
    /// one), of the given executors; `everything` takes every unfinished execution
    /// whatever its lease (the embedded default's start-up: it is the only replica).
    pub async fn claim_expired(
        &self,
        executors: &[&str],
        everything: bool,
    ) -> Result<Vec<Claimed>, StoreError> {
        let me = self.ownership.replica.to_string();
        let until = self.ownership.expiry();
        // Leases that end before this are expired ("everything": any lease).
        let before = match everything {
            // Not NaiveDateTime::MAX: SQLite compares times as text, and a year past
            // 9999 is written with a sign.
            true => chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .expect("a valid date"),
            false => super::now(),
        };
        let executors: Vec<String> = executors.iter().map(|e| e.to_string()).collect();
        self.db
            .run(move |conn| {
                // The rows to take, locked (PostgreSQL; SKIP LOCKED leaves rows another
                // replica is claiming to it) and re-checked, then taken in the same
                // transaction.
                macro_rules! expired {
                    () => {
                        executions::table
                            .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(OPEN))
                            .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(NOT_WAITING))
                            .filter(executions::executor.eq_any(&executors))
                            .filter(
                                executions::lease_expires_at
                                    .is_null()
                                    .or(executions::lease_expires_at.lt(before)),
                            )
                            .select((
                                executions::id,
                                executions::name,
                                executions::executor,
                                executions::status,
                                executions::owner,
                            ))
                            .order(executions::created_at)
                            .limit(CLAIM_BATCH)
                    };
                }
                let rows: Vec<ClaimRow> = match conn {
                    DbConnection::Postgresql(c) => c.transaction(|c| {
                        let rows: Vec<ClaimRow> = expired!().for_update().skip_locked().load(c)?;
                        take!(c, rows, me, until);
                        Ok::<_, diesel::result::Error>(rows)
                    })?,
                    DbConnection::Sqlite(c) => c.immediate_transaction(|c| {
                        let rows: Vec<ClaimRow> = expired!().load(c)?;
                        take!(c, rows, me, until);
                        Ok::<_, diesel::result::Error>(rows)
                    })?,
                };
                rows.into_iter()
                    .map(|(id, name, executor, status, owner)| {
                        let status = status.parse().map_err(|e: String| {
                            StoreError::Corrupt(format!("execution {name}: {e}"))
                        })?;
                        Ok(Claimed {
                            id,
                            name,
                            executor,
                            status,
                            previous_owner: owner,
                        })
                    })
                    .collect()
            })
            .await
    }

    /// Puts runs this replica claimed while they were promoted from a queue but never
    /// launched (their replica died, or this one restarted) back in their place in the
    /// queue: no owner, no lease, the same `created_at`.
    pub async fn requeue(&self, names: Vec<String>) -> Result<usize, StoreError> {
        if names.is_empty() {
            return Ok(0);
        }
        let me = self.ownership.replica.to_string();
        self.db
            .run(move |conn| {
                Ok(with_backend!(conn, |c| diesel::update(
                    executions::table
                        .filter(executions::name.eq_any(&names))
                        .filter(executions::status.eq(Status::Queued.as_str()))
                        .filter(executions::owner.eq(&me)),
                )
                .set((
                    executions::owner.eq(None::<String>),
                    executions::lease_expires_at.eq(None::<NaiveDateTime>),
                ))
                .execute(c))?)
            })
            .await
    }

    /// Ends this replica's leases on `names` at once (a graceful stop hands its
    /// Kubernetes runs over): the next claim of any replica takes them.
    pub async fn release(&self, names: Vec<String>) -> Result<usize, StoreError> {
        if names.is_empty() {
            return Ok(0);
        }
        let me = self.ownership.replica.to_string();
        let expired = chrono::DateTime::UNIX_EPOCH.naive_utc();
        self.db
            .run(move |conn| {
                Ok(with_backend!(conn, |c| diesel::update(
                    executions::table
                        .filter(executions::owner.eq(&me))
                        .filter(executions::name.eq_any(&names))
                        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(OPEN)),
                )
                .set(executions::lease_expires_at.eq(expired))
                .execute(c))?)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_clause_names_exactly_the_unfinished_statuses() {
        let listed: Vec<String> = Status::unfinished_names()
            .iter()
            .map(|s| format!("'{s}'"))
            .collect();
        assert_eq!(OPEN, format!("status IN ({})", listed.join(", ")));
    }
}
