//! Retention: removes what has been kept long enough, a little at a time.
//!
//! A pass goes down its [`Target`]s in order. Each removes at most [`RUN_BATCH`] runs
//! or [`LINE_BATCH`] rows per statement, each statement its own short transaction,
//! and rests between statements ([`rest`]) so that runs being written never wait long
//! behind it (SQLite has one writer at a time; PostgreSQL only locks the rows it
//! removes, which nothing else touches: they belong to runs finished long ago).
//!
//! - Only finished runs (`finished_at` set) are removed, whatever their age: a run
//!   still RECEIVED, CREATED or RUNNING is never touched.
//! - [`Target::Runs`]: runs finished longer ago than their execution retention go
//!   whole: their lines first (in batches: one run with a million lines is a hundred
//!   statements, not one huge transaction), then their records.
//! - [`Target::RunLogs`]: the lines of runs finished longer ago than their log
//!   retention go; the record stays, with `logs_purged_at` set, so the logs API says
//!   that retention removed them, and when.
//! - [`Target::Expiring`]: rows of a table that simply expire by a time column (a
//!   schedule's fires; the audit log adds itself here in a few lines).
//!
//! Every step is idempotent (a delete of what is due), so two replicas purging at once
//! would only waste work; on PostgreSQL a pass still runs on one replica at a time,
//! under a session advisory lock ([`PURGE_LOCK`]), which PostgreSQL releases by itself
//! if the replica dies. SQLite is one replica.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;

use super::schema::{execution_logs, executions};
use super::{Db, DbConnection, ProcStore, StoreError};
use crate::config::Retention;
use crate::model::ProcMetadata;

/// Runs looked at (and removed) per statement.
pub const RUN_BATCH: i64 = 1_000;
/// Log lines (or rows of an expiring table) removed per statement.
pub const LINE_BATCH: i64 = 10_000;
/// After each statement the pass rests this many times as long as the statement took
/// (at least [`MIN_REST`]): it holds the database at most a twentieth of the time.
/// Measured beside sustained dispatch on 2 cores (BENCHMARKS.md "retention"): at 3
/// dispatch was 35% slower on PostgreSQL, at 9 still 26% (16% on SQLite); what a
/// delete costs besides its statement (WAL, autovacuum of the dead rows) counts too.
const REST_FACTOR: u32 = 19;
const MIN_REST: Duration = Duration::from_millis(5);
/// The PostgreSQL advisory lock one purging replica holds ("PROCPURG").
pub const PURGE_LOCK: i64 = 0x5052_4F43_5055_5247;

/// How long something is kept: a number of days, or `None` for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keep {
    pub execution_days: Option<u32>,
    /// `None`: as long as the run.
    pub log_days: Option<u32>,
}

impl Keep {
    /// Lines never outlive their run.
    fn capped(self) -> Self {
        let log_days = match (self.execution_days, self.log_days) {
            (Some(runs), Some(logs)) => Some(logs.min(runs)),
            (Some(runs), None) => Some(runs),
            (None, logs) => logs,
        };
        Self {
            execution_days: self.execution_days,
            log_days,
        }
    }
}

/// The retention of every proc: the settings', and a proc's own where its metadata
/// sets one (0 there means for ever, or for lines, as long as the run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default: Keep,
    pub procs: BTreeMap<String, Keep>,
}

impl Policy {
    pub fn new(retention: &Retention, procs: &[ProcMetadata]) -> Self {
        let default = Keep {
            execution_days: retention.execution_days,
            log_days: retention.log_days,
        };
        let days = |own: Option<u32>, default: Option<u32>| match own {
            Some(0) => None,
            Some(days) => Some(days),
            None => default,
        };
        let procs = procs
            .iter()
            .filter(|p| p.execution_retention_days.is_some() || p.log_retention_days.is_some())
            .map(|p| {
                let keep = Keep {
                    execution_days: days(p.execution_retention_days, default.execution_days),
                    log_days: days(p.log_retention_days, default.log_days),
                };
                (p.name.as_str().to_owned(), keep)
            })
            .collect();
        Self { default, procs }
    }

    /// Each proc with a retention of its own, then every other proc.
    fn groups(&self) -> Vec<(Scope, Keep)> {
        let mut groups: Vec<(Scope, Keep)> = self
            .procs
            .iter()
            .map(|(proc, keep)| (Scope::Proc(proc.clone()), keep.capped()))
            .collect();
        let others = self.procs.keys().cloned().collect();
        groups.push((Scope::AllBut(others), self.default.capped()));
        groups
    }
}

/// Whose runs a step looks at.
#[derive(Debug, Clone)]
enum Scope {
    Proc(String),
    AllBut(Vec<String>),
}

/// One kind of record a pass removes. A table whose rows expire by a timestamp column
/// needs no code of its own: add a [`Target::Expiring`] to [`PurgeStore::targets`] (the
/// audit log: `Expiring { table: "audit_log", column: "at", days: ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Finished runs past their execution retention, with their lines.
    Runs,
    /// The lines of finished runs past their log retention; the records stay.
    RunLogs,
    /// Rows of `table` whose `column` is older than `days` (`None`: kept for ever).
    /// The names are the code's, never input.
    Expiring {
        table: &'static str,
        column: &'static str,
        days: Option<u32>,
    },
}

/// What a pass removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Rows by table.
    pub removed: BTreeMap<&'static str, u64>,
    /// Runs whose lines were removed while their records stay.
    pub runs_without_lines: u64,
    pub dry_run: bool,
    /// Stopped before the end (proctord is stopping); the next pass goes on.
    pub interrupted: bool,
}

impl PurgeReport {
    pub fn rows(&self, table: &str) -> u64 {
        self.removed.get(table).copied().unwrap_or(0)
    }
}

/// Called with (table, rows) after each statement that removed rows.
pub type OnRemoved = Arc<dyn Fn(&'static str, u64) + Send + Sync>;

/// Runs purge passes on a connection of its own.
#[derive(Clone)]
pub struct PurgeStore {
    db: Db,
    procs: ProcStore,
    retention: Retention,
    targets: Vec<Target>,
}

impl PurgeStore {
    /// `db` should be a pool of its own ([`Db::reserved`]): a long pass holds its
    /// one connection without taking one from the requests.
    pub fn new(db: Db, procs: ProcStore, retention: Retention) -> Self {
        let targets = vec![
            Target::Runs,
            Target::RunLogs,
            // A fire's record is kept as long as the runs of its time.
            Target::Expiring {
                table: "schedule_fires",
                column: "fire_at",
                days: retention.execution_days,
            },
        ];
        Self {
            db,
            procs,
            retention,
            targets,
        }
    }

    /// One whole pass. `None` when another replica is purging now (PostgreSQL). A
    /// dry run counts what would go and removes nothing (it takes no lock).
    pub async fn run(
        &self,
        dry_run: bool,
        stop: Arc<AtomicBool>,
        on_removed: OnRemoved,
    ) -> Result<Option<PurgeReport>, StoreError> {
        let procs = self.procs.list().await?;
        let policy = Policy::new(&self.retention, &procs);
        let targets = self.targets.clone();
        let db = self.db.clone();
        crate::telemetry::spawn_blocking_with_tracing(move || {
            let mut conn = db.connection()?;
            let conn: &mut DbConnection = &mut conn;
            let locked = match (&mut *conn, dry_run) {
                (DbConnection::Postgresql(c), false) => Some(try_lock(c)?),
                _ => None,
            };
            if locked == Some(false) {
                return Ok(None);
            }
            let mut pass = Pass {
                conn,
                now: super::now(),
                dry_run,
                stop: &stop,
                on_removed: &*on_removed,
                report: PurgeReport {
                    dry_run,
                    ..PurgeReport::default()
                },
            };
            let result = pass.all(&policy, &targets);
            let report = pass.report;
            if locked == Some(true)
                && let DbConnection::Postgresql(c) = &mut *conn
            {
                // A broken connection took the lock with it.
                let _ = unlock(c);
            }
            result?;
            Ok(Some(report))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

fn try_lock(c: &mut diesel::PgConnection) -> QueryResult<bool> {
    diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<diesel::sql_types::BigInt, _>(PURGE_LOCK)
        .get_result::<Locked>(c)
        .map(|l| l.locked)
}

fn unlock(c: &mut diesel::PgConnection) -> QueryResult<bool> {
    diesel::sql_query("SELECT pg_advisory_unlock($1) AS locked")
        .bind::<diesel::sql_types::BigInt, _>(PURGE_LOCK)
        .get_result::<Locked>(c)
        .map(|l| l.locked)
}

/// Runs of `$scope` finished before `$cutoff` (created before it too: a run is
/// created before it finishes, and that range is what an index reads).
macro_rules! due_runs {
    ($scope:expr, $cutoff:expr) => {{
        let mut query = executions::table
            .filter(executions::created_at.lt($cutoff))
            .filter(executions::finished_at.lt($cutoff))
            .into_boxed();
        match $scope {
            Scope::Proc(proc) => query = query.filter(executions::proc_name.eq(proc)),
            Scope::AllBut(procs) if !procs.is_empty() => {
                query = query.filter(executions::proc_name.ne_all(procs))
            }
            Scope::AllBut(_) => {}
        }
        query
    }};
}

/// Runs of `$scope` finished before `$cutoff` whose lines are still stored, leaving
/// out those finished before `$whole` (their records go whole, lines with them).
macro_rules! due_lines {
    ($scope:expr, $cutoff:expr, $whole:expr) => {{
        let mut query = executions::table
            .filter(executions::finished_at.lt($cutoff))
            .filter(executions::logs_purged_at.is_null())
            .into_boxed();
        if let Some(whole) = $whole {
            query = query.filter(executions::finished_at.ge(whole));
        }
        match $scope {
            Scope::Proc(proc) => query = query.filter(executions::proc_name.eq(proc)),
            Scope::AllBut(procs) if !procs.is_empty() => {
                query = query.filter(executions::proc_name.ne_all(procs))
            }
            Scope::AllBut(_) => {}
        }
        query
    }};
}

/// Up to `$2` lines of the runs in `$1`, by physical row id: the statement finds them
/// through the primary key (execution_id, seq) and removes exactly that many.
const PG_DELETE_LINES: &str = "DELETE FROM execution_logs WHERE ctid = ANY(ARRAY( \
     SELECT ctid FROM execution_logs WHERE execution_id = ANY($1) LIMIT $2))";
const SQLITE_DELETE_LINES: &str = "DELETE FROM execution_logs WHERE rowid IN ( \
     SELECT rowid FROM execution_logs \
     WHERE execution_id IN (SELECT value FROM json_each(?)) LIMIT ?)";

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// One pass on one connection.
struct Pass<'a> {
    conn: &'a mut DbConnection,
    now: NaiveDateTime,
    dry_run: bool,
    stop: &'a AtomicBool,
    on_removed: &'a (dyn Fn(&'static str, u64) + Send + Sync),
    report: PurgeReport,
}

/// Sleeps after a statement that took `took`: see [`REST_FACTOR`].
fn rest(took: Duration) {
    std::thread::sleep((took * REST_FACTOR).max(MIN_REST));
}

impl Pass<'_> {
    fn all(&mut self, policy: &Policy, targets: &[Target]) -> QueryResult<()> {
        for target in targets {
            match target {
                Target::Runs => {
                    for (scope, keep) in policy.groups() {
                        if let Some(cutoff) = self.cutoff(keep.execution_days) {
                            self.runs(&scope, cutoff)?;
                        }
                    }
                }
                Target::RunLogs => {
                    for (scope, keep) in policy.groups() {
                        if keep.log_days == keep.execution_days {
                            continue;
                        }
                        if let Some(cutoff) = self.cutoff(keep.log_days) {
                            let whole = self.cutoff(keep.execution_days);
                            self.lines(&scope, cutoff, whole)?;
                        }
                    }
                }
                Target::Expiring {
                    table,
                    column,
                    days,
                } => {
                    if let Some(cutoff) = self.cutoff(*days) {
                        self.expiring(table, column, cutoff)?;
                    }
                }
            }
            if self.stopped() {
                break;
            }
        }
        Ok(())
    }

    fn cutoff(&self, days: Option<u32>) -> Option<NaiveDateTime> {
        days.map(|d| self.now - TimeDelta::days(i64::from(d)))
    }

    fn stopped(&mut self) -> bool {
        let stopped = self.stop.load(Ordering::Relaxed);
        self.report.interrupted |= stopped;
        stopped
    }

    fn removed(&mut self, table: &'static str, rows: u64) {
        if rows == 0 {
            return;
        }
        *self.report.removed.entry(table).or_default() += rows;
        if !self.dry_run {
            (self.on_removed)(table, rows);
        }
    }

    /// Whole runs: their lines, then their records, [`RUN_BATCH`] at a time.
    fn runs(&mut self, scope: &Scope, cutoff: NaiveDateTime) -> QueryResult<()> {
        if self.dry_run {
            let (runs, lines): (i64, i64) = with_backend!(&mut *self.conn, |c| {
                let runs = due_runs!(scope, cutoff).count().get_result(c)?;
                let lines = execution_logs::table
                    .filter(
                        execution_logs::execution_id
                            .eq_any(due_runs!(scope, cutoff).select(executions::id)),
                    )
                    .count()
                    .get_result(c)?;
                (runs, lines)
            });
            self.removed("executions", runs as u64);
            self.removed("execution_logs", lines as u64);
            return Ok(());
        }
        loop {
            if self.stopped() {
                return Ok(());
            }
            let started = Instant::now();
            // In created_at order: the planner then reads the index range and stops
            // at RUN_BATCH, where without an order PostgreSQL chose a scan of the whole
            // table (220 ms on 1,000,000 runs, see BENCHMARKS.md).
            let ids: Vec<String> = with_backend!(&mut *self.conn, |c| due_runs!(scope, cutoff)
                .select(executions::id)
                .order(executions::created_at)
                .limit(RUN_BATCH)
                .load(c))?;
            if ids.is_empty() {
                return Ok(());
            }
            rest(started.elapsed());
            if !self.lines_of(&ids)? {
                return Ok(());
            }
            let started = Instant::now();
            let removed = with_backend!(&mut *self.conn, |c| diesel::delete(
                executions::table
                    .filter(executions::id.eq_any(&ids))
                    .filter(executions::finished_at.is_not_null())
            )
            .execute(c))?;
            self.removed("executions", removed as u64);
            rest(started.elapsed());
            if (ids.len() as i64) < RUN_BATCH {
                return Ok(());
            }
        }
    }

    /// The lines of runs whose records stay, [`RUN_BATCH`] runs at a time.
    fn lines(
        &mut self,
        scope: &Scope,
        cutoff: NaiveDateTime,
        whole: Option<NaiveDateTime>,
    ) -> QueryResult<()> {
        if self.dry_run {
            let (runs, lines): (i64, i64) = with_backend!(&mut *self.conn, |c| {
                let runs = due_lines!(scope, cutoff, whole).count().get_result(c)?;
                let lines = execution_logs::table
                    .filter(
                        execution_logs::execution_id
                            .eq_any(due_lines!(scope, cutoff, whole).select(executions::id)),
                    )
                    .count()
                    .get_result(c)?;
                (runs, lines)
            });
            self.report.runs_without_lines += runs as u64;
            self.removed("execution_logs", lines as u64);
            return Ok(());
        }
        loop {
            if self.stopped() {
                return Ok(());
            }
            let started = Instant::now();
            let ids: Vec<String> =
                with_backend!(&mut *self.conn, |c| due_lines!(scope, cutoff, whole)
                    .select(executions::id)
                    .order(executions::finished_at)
                    .limit(RUN_BATCH)
                    .load(c))?;
            if ids.is_empty() {
                return Ok(());
            }
            rest(started.elapsed());
            if !self.lines_of(&ids)? {
                return Ok(());
            }
            let started = Instant::now();
            let now = self.now;
            let marked = with_backend!(&mut *self.conn, |c| diesel::update(
                executions::table
                    .filter(executions::id.eq_any(&ids))
                    .filter(executions::logs_purged_at.is_null())
            )
            .set(executions::logs_purged_at.eq(now))
            .execute(c))?;
            self.report.runs_without_lines += marked as u64;
            rest(started.elapsed());
            if (ids.len() as i64) < RUN_BATCH {
                return Ok(());
            }
        }
    }

    /// Removes every line of `ids`, [`LINE_BATCH`] per statement; false when stopped
    /// before the last one.
    fn lines_of(&mut self, ids: &[String]) -> QueryResult<bool> {
        loop {
            if self.stopped() {
                return Ok(false);
            }
            let started = Instant::now();
            let removed = match &mut *self.conn {
                DbConnection::Postgresql(c) => diesel::sql_query(PG_DELETE_LINES)
                    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(ids)
                    .bind::<diesel::sql_types::BigInt, _>(LINE_BATCH)
                    .execute(c)?,
                DbConnection::Sqlite(c) => diesel::sql_query(SQLITE_DELETE_LINES)
                    .bind::<diesel::sql_types::Text, _>(
                        serde_json::to_string(ids).expect("strings serialize"),
                    )
                    .bind::<diesel::sql_types::BigInt, _>(LINE_BATCH)
                    .execute(c)?,
            };
            self.removed("execution_logs", removed as u64);
            if (removed as i64) < LINE_BATCH {
                return Ok(true);
            }
            rest(started.elapsed());
        }
    }

    /// Rows of `table` older than `cutoff` by `column`, [`LINE_BATCH`] per statement.
    fn expiring(
        &mut self,
        table: &'static str,
        column: &'static str,
        cutoff: NaiveDateTime,
    ) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Timestamp};
        if self.dry_run {
            let count = format!("SELECT COUNT(*) AS n FROM {table} WHERE {column} < ");
            let n = match &mut *self.conn {
                DbConnection::Postgresql(c) => diesel::sql_query(count + "$1")
                    .bind::<Timestamp, _>(cutoff)
                    .get_result::<Count>(c)?,
                DbConnection::Sqlite(c) => diesel::sql_query(count + "?")
                    .bind::<Timestamp, _>(cutoff)
                    .get_result::<Count>(c)?,
            };
            self.removed(table, n.n as u64);
            return Ok(());
        }
        let pg = format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY( \
             SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))"
        );
        let sqlite = format!(
            "DELETE FROM {table} WHERE rowid IN ( \
             SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)"
        );
        loop {
            if self.stopped() {
                return Ok(());
            }
            let started = Instant::now();
            let removed = match &mut *self.conn {
                DbConnection::Postgresql(c) => diesel::sql_query(&pg)
                    .bind::<Timestamp, _>(cutoff)
                    .bind::<BigInt, _>(LINE_BATCH)
                    .execute(c)?,
                DbConnection::Sqlite(c) => diesel::sql_query(&sqlite)
                    .bind::<Timestamp, _>(cutoff)
                    .bind::<BigInt, _>(LINE_BATCH)
                    .execute(c)?,
            };
            self.removed(table, removed as u64);
            if (removed as i64) < LINE_BATCH {
                return Ok(());
            }
            rest(started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(name: &str, runs: Option<u32>, logs: Option<u32>) -> ProcMetadata {
        let mut proc: ProcMetadata = serde_json::from_value(serde_json::json!({
            "name": name, "image_name": "alpine:3"
        }))
        .unwrap();
        proc.execution_retention_days = runs;
        proc.log_retention_days = logs;
        proc
    }

    fn retention(runs: Option<u32>, logs: Option<u32>) -> Retention {
        Retention {
            execution_days: runs,
            log_days: logs,
            interval: Duration::from_secs(600),
        }
    }

    #[test]
    fn a_procs_own_retention_wins_and_lines_never_outlive_their_run() {
        let policy = Policy::new(
            &retention(Some(365), Some(30)),
            &[
                proc("plain", None, None),
                proc("short", Some(7), None),
                proc("forever", Some(0), Some(90)),
                proc("lines-as-long-as-runs", None, Some(0)),
            ],
        );
        assert!(
            !policy.procs.contains_key("plain"),
            "no override: the default"
        );
        let groups: BTreeMap<String, Keep> = policy
            .groups()
            .into_iter()
            .map(|(scope, keep)| match scope {
                Scope::Proc(p) => (p, keep),
                Scope::AllBut(others) => (format!("others but {}", others.len()), keep),
            })
            .collect();
        let keep = |runs, logs| Keep {
            execution_days: runs,
            log_days: logs,
        };
        assert_eq!(
            groups["short"],
            keep(Some(7), Some(7)),
            "lines capped at the run's 7 days"
        );
        assert_eq!(groups["forever"], keep(None, Some(90)));
        assert_eq!(groups["lines-as-long-as-runs"], keep(Some(365), Some(365)));
        assert_eq!(groups["others but 3"], keep(Some(365), Some(30)));
    }

    #[test]
    fn zero_everywhere_keeps_everything() {
        let policy = Policy::new(&retention(None, None), &[]);
        let groups = policy.groups();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].1, Keep::default());
    }
}
