//! Counts for the console's overview: finished runs per time bucket and status, per proc
//! with the median and 95th percentile of their durations, and the runs not yet final.
//! All exact. Both backends read the range proc by proc from the covering index
//! `executions_stats` (proc_name, created_at, then status, the times and the starter:
//! migration 7), never the table, one short range scan per proc name (the names found
//! by skipping through the same index). PostgreSQL counts and ranks in SQL
//! (`percentile_cont` per proc in a `LATERAL` subquery); on SQLite, which has neither a
//! percentile nor a hash aggregate (its `GROUP BY` and window functions sort every row),
//! each proc's rows are read as (bucket, status, duration) and counted and sorted here,
//! with `percentile_cont`'s linear interpolation.

use std::collections::BTreeMap;

use chrono::{NaiveDateTime, NaiveTime, TimeDelta, Timelike};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text, Timestamp};
use serde::Serialize;

use super::ExecutionStore;
use crate::model::Status;
use crate::store::schema::executions;
use crate::store::{DbConnection, StoreError};

/// The width of one bucket of [`Stats::buckets`], aligned on UTC hours or days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "hour" => Ok(Bucket::Hour),
            "day" => Ok(Bucket::Day),
            _ => Err(format!(
                "bucket must be hour or day, not {:?}",
                crate::model::ids::truncate(text, 32)
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }

    pub fn width(self) -> TimeDelta {
        match self {
            Bucket::Hour => TimeDelta::hours(1),
            Bucket::Day => TimeDelta::days(1),
        }
    }

    /// The start of the bucket `t` falls in.
    pub fn floor(self, t: NaiveDateTime) -> NaiveDateTime {
        let hour = match self {
            Bucket::Hour => t.hour(),
            Bucket::Day => 0,
        };
        t.date()
            .and_time(NaiveTime::from_hms_opt(hour, 0, 0).unwrap_or(NaiveTime::MIN))
    }

    /// The first bucket start at or after `t` (`None` past the calendar's end).
    pub fn ceil(self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let floor = self.floor(t);
        if floor == t {
            Some(t)
        } else {
            floor.checked_add_signed(self.width())
        }
    }

    /// The SQL that truncates `created_at` to its bucket's start on PostgreSQL.
    fn pg_truncate(self) -> &'static str {
        match self {
            Bucket::Hour => "date_trunc('hour', created_at)",
            Bucket::Day => "date_trunc('day', created_at)",
        }
    }
}

/// What [`ExecutionStore::stats`] counts: runs created in `[since, until)`, both on
/// bucket boundaries.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    pub since: NaiveDateTime,
    pub until: NaiveDateTime,
    pub bucket: Bucket,
    /// Only executions of these procs, or started by this user (access control).
    pub visible_to: Option<(Vec<String>, String)>,
}

/// Finished runs of one bucket by final status (statuses without runs left out).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BucketCounts {
    #[serde(serialize_with = "serialize_start")]
    #[schema(value_type = String, format = DateTime)]
    pub start: NaiveDateTime,
    pub counts: BTreeMap<String, i64>,
}

fn serialize_start<S: serde::Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(
        &t.and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// One proc's finished runs. Durations run from `started_at` to `finished_at`, in
/// seconds to the millisecond; runs without both are left out of the percentiles, which
/// are null when none has both.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProcStats {
    pub proc: String,
    pub runs: i64,
    pub succeeded: i64,
    /// Runs that ended in any final status but SUCCEEDED.
    pub failed: i64,
    pub success_rate: f64,
    pub p50_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
}

/// The answer of [`ExecutionStore::stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Every bucket of the range, oldest first, empty ones included.
    pub buckets: Vec<BucketCounts>,
    /// By proc name.
    pub procs: Vec<ProcStats>,
    /// Runs not yet final, whenever they were created.
    pub running: i64,
}

#[derive(QueryableByName)]
struct BucketRow {
    #[diesel(sql_type = Timestamp)]
    start: NaiveDateTime,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    runs: i64,
}

#[derive(QueryableByName)]
struct ProcRow {
    #[diesel(sql_type = Text)]
    proc_name: String,
    #[diesel(sql_type = BigInt)]
    runs: i64,
    #[diesel(sql_type = BigInt)]
    succeeded: i64,
    #[diesel(sql_type = Nullable<Double>)]
    p50: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    p95: Option<f64>,
}

#[derive(QueryableByName)]
struct ProcName {
    #[diesel(sql_type = Text)]
    p: String,
}

/// One finished run on SQLite: milliseconds from `since` to its creation, its final
/// status as an index into [`final_list`], its duration in seconds.
#[derive(QueryableByName)]
struct RunRow {
    #[diesel(sql_type = BigInt)]
    offset_ms: i64,
    #[diesel(sql_type = BigInt)]
    status: i64,
    #[diesel(sql_type = Nullable<Double>)]
    secs: Option<f64>,
}

/// The final statuses, in [`Status::ALL`]'s order.
fn final_list() -> Vec<&'static str> {
    Status::ALL
        .iter()
        .filter(|s| s.is_final())
        .map(|s| s.as_str())
        .collect()
}

/// `'SUCCEEDED', 'FAILED', ...`: the final statuses as an SQL list (constants only).
fn final_statuses() -> String {
    final_list()
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The proc names that have executions, smallest first, as the rows `procs(p)` of a
/// recursive CTE: one index probe per name (a loose scan of the proc_name indexes)
/// instead of reading every row for `DISTINCT`.
const PROC_NAMES: &str = "WITH RECURSIVE procs(p) AS (SELECT min(proc_name) FROM executions \
     UNION ALL SELECT (SELECT min(proc_name) FROM executions WHERE proc_name > procs.p) \
     FROM procs WHERE procs.p IS NOT NULL)";

/// On PostgreSQL, inside a `LATERAL` subquery over `procs`: `$1` since, `$2` until, then
/// `$3` procs and `$4` user when restricted.
fn pg_filter(restricted: bool) -> String {
    let mut filter = format!(
        "proc_name = procs.p AND created_at >= $1 AND created_at < $2 AND status IN ({})",
        final_statuses()
    );
    if restricted {
        filter.push_str(" AND (proc_name = ANY($3) OR user_email = $4)");
    }
    filter
}

/// On SQLite: `?1` since, `?2` until, `?3` the proc, then `?4` the visible procs as a
/// JSON array and `?5` the user when restricted.
fn sqlite_filter(restricted: bool) -> String {
    let mut filter = format!(
        "proc_name = ?3 AND created_at >= ?1 AND created_at < ?2 AND status IN ({})",
        final_statuses()
    );
    if restricted {
        filter.push_str(" AND (proc_name IN (SELECT value FROM json_each(?4)) OR user_email = ?5)");
    }
    filter
}

/// One proc's finished runs on SQLite, in index order. The offset is taken in whole
/// milliseconds (SQLite's own resolution for times), so the bucket it falls in is exact.
fn sqlite_runs(filter: &str) -> String {
    let status = final_list()
        .iter()
        .enumerate()
        .map(|(i, s)| format!("WHEN '{s}' THEN {i}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "SELECT CAST(round((julianday(created_at) - julianday(?1)) * 86400000.0) AS INTEGER) \
         AS offset_ms, CASE status {status} END AS status, \
         CASE WHEN started_at IS NOT NULL AND finished_at IS NOT NULL \
         THEN (julianday(finished_at) - julianday(started_at)) * 86400.0 END AS secs \
         FROM executions INDEXED BY executions_stats WHERE {filter}"
    )
}

/// `percentile_cont(p)` over ascending `sorted`: the linear interpolation between the
/// two values around rank `p * (n - 1)`.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = p * last as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[low] + (sorted[high.min(last)] - sorted[low]) * (rank - low as f64))
}

/// Seconds to the millisecond (both backends' floating-point noise removed).
fn to_millis(seconds: Option<f64>) -> Option<f64> {
    seconds.map(|s| (s * 1000.0).round() / 1000.0)
}

type Counts = BTreeMap<NaiveDateTime, BTreeMap<String, i64>>;

/// PostgreSQL: per proc, an index-only range scan of `executions_stats` for the counts
/// by bucket and status, and another ranked by duration for the percentiles (on the
/// interval itself: no conversion per row). JIT is off for these statements: their
/// estimated cost over a million rows switches it on, and compiling took ~0.4 s of a
/// ~1 s statement.
fn pg_stats(
    c: &mut diesel::PgConnection,
    since: NaiveDateTime,
    until: NaiveDateTime,
    bucket: Bucket,
    visible_to: &Option<(Vec<String>, String)>,
) -> Result<(Vec<BucketRow>, Vec<ProcRow>), diesel::result::Error> {
    let filter = pg_filter(visible_to.is_some());
    let truncate = bucket.pg_truncate();
    let by_bucket = format!(
        "{PROC_NAMES} SELECT s.start, s.status, s.runs FROM procs, LATERAL \
         (SELECT {truncate} AS start, status, count(*) AS runs FROM executions \
         WHERE {filter} GROUP BY 1, 2) s WHERE procs.p IS NOT NULL"
    );
    let pick = |p: f64| {
        format!(
            "EXTRACT(EPOCH FROM percentile_cont({p}) WITHIN GROUP \
             (ORDER BY finished_at - started_at))::float8"
        )
    };
    let by_proc = format!(
        "{PROC_NAMES} SELECT procs.p AS proc_name, s.runs, s.succeeded, s.p50, s.p95 \
         FROM procs, LATERAL (SELECT count(*) AS runs, \
         count(*) FILTER (WHERE status = 'SUCCEEDED') AS succeeded, \
         {p50} AS p50, {p95} AS p95 FROM executions WHERE {filter}) s \
         WHERE procs.p IS NOT NULL AND s.runs > 0 ORDER BY 1",
        p50 = pick(0.5),
        p95 = pick(0.95),
    );
    c.transaction(|c| {
        diesel::sql_query("SET LOCAL jit = off").execute(c)?;
        let by_bucket = diesel::sql_query(by_bucket)
            .bind::<Timestamp, _>(since)
            .bind::<Timestamp, _>(until);
        let by_proc = diesel::sql_query(by_proc)
            .bind::<Timestamp, _>(since)
            .bind::<Timestamp, _>(until);
        Ok(match visible_to {
            Some((procs, user)) => (
                by_bucket
                    .bind::<Array<Text>, _>(procs)
                    .bind::<Text, _>(user)
                    .load(c)?,
                by_proc
                    .bind::<Array<Text>, _>(procs)
                    .bind::<Text, _>(user)
                    .load(c)?,
            ),
            None => (by_bucket.load(c)?, by_proc.load(c)?),
        })
    })
}

/// SQLite: per proc, a covering range scan of `executions_stats`; counted and sorted
/// here.
fn sqlite_stats(
    c: &mut diesel::SqliteConnection,
    since: NaiveDateTime,
    until: NaiveDateTime,
    bucket: Bucket,
    visible_to: &Option<(Vec<String>, String)>,
) -> Result<(Counts, Vec<ProcStats>), diesel::result::Error> {
    let statuses = final_list();
    let width_ms = bucket.width().num_milliseconds();
    let buckets = ((until - since).num_milliseconds() / width_ms).max(1);
    let sql = sqlite_runs(&sqlite_filter(visible_to.is_some()));
    let visible = visible_to
        .as_ref()
        .map(|(procs, user)| (serde_json::to_string(procs).expect("names serialize"), user));
    let names: Vec<ProcName> = diesel::sql_query(format!(
        "{PROC_NAMES} SELECT p FROM procs WHERE p IS NOT NULL"
    ))
    .load(c)?;
    // (bucket, status) → runs, over every proc.
    let mut grid = vec![0i64; buckets as usize * statuses.len()];
    let mut procs = Vec::new();
    let mut secs = Vec::new();
    for ProcName { p } in names {
        let query = diesel::sql_query(&sql)
            .bind::<Timestamp, _>(since)
            .bind::<Timestamp, _>(until)
            .bind::<Text, _>(&p);
        let rows: Vec<RunRow> = match &visible {
            Some((procs, user)) => query
                .bind::<Text, _>(procs)
                .bind::<Text, _>(*user)
                .load(c)?,
            None => query.load(c)?,
        };
        if rows.is_empty() {
            continue;
        }
        secs.clear();
        let mut succeeded = 0;
        for row in &rows {
            let status = row.status as usize;
            // A time a hair before `until` may round up to it: the last bucket.
            let index = (row.offset_ms.div_euclid(width_ms)).clamp(0, buckets - 1) as usize;
            grid[index * statuses.len() + status] += 1;
            if statuses[status] == Status::Succeeded.as_str() {
                succeeded += 1;
            }
            secs.extend(row.secs);
        }
        secs.sort_unstable_by(f64::total_cmp);
        let runs = rows.len() as i64;
        procs.push(ProcStats {
            proc: p,
            runs,
            succeeded,
            failed: runs - succeeded,
            success_rate: succeeded as f64 / runs as f64,
            p50_seconds: to_millis(percentile(&secs, 0.5)),
            p95_seconds: to_millis(percentile(&secs, 0.95)),
        });
    }
    let mut counts = Counts::new();
    for (i, runs) in grid.into_iter().enumerate() {
        if runs > 0 {
            let start = since + bucket.width() * (i / statuses.len()) as i32;
            counts
                .entry(start)
                .or_default()
                .insert(statuses[i % statuses.len()].to_string(), runs);
        }
    }
    Ok((counts, procs))
}

impl ExecutionStore {
    /// Finished runs created in `[since, until)` by bucket and status and by proc, and
    /// the runs not yet final, as `query.visible_to` may see them.
    pub async fn stats(&self, query: StatsQuery) -> Result<Stats, StoreError> {
        self.db
            .run(move |conn| {
                let StatsQuery {
                    since,
                    until,
                    bucket,
                    visible_to,
                } = query;
                let (mut counts, procs) = match conn {
                    DbConnection::Postgresql(c) => {
                        let (bucket_rows, proc_rows) =
                            pg_stats(c, since, until, bucket, &visible_to)?;
                        let mut counts = Counts::new();
                        for row in bucket_rows {
                            *counts
                                .entry(row.start)
                                .or_default()
                                .entry(row.status)
                                .or_default() += row.runs;
                        }
                        let procs = proc_rows
                            .into_iter()
                            .map(|row| ProcStats {
                                failed: row.runs - row.succeeded,
                                success_rate: row.succeeded as f64 / row.runs.max(1) as f64,
                                p50_seconds: to_millis(row.p50),
                                p95_seconds: to_millis(row.p95),
                                proc: row.proc_name,
                                runs: row.runs,
                                succeeded: row.succeeded,
                            })
                            .collect::<Vec<_>>();
                        (counts, procs)
                    }
                    DbConnection::Sqlite(c) => sqlite_stats(c, since, until, bucket, &visible_to)?,
                };
                let open = Status::unfinished_names();
                let running: i64 = with_backend!(conn, |c| {
                    let mut count = executions::table
                        .filter(executions::status.eq_any(&open))
                        .into_boxed();
                    if let Some((procs, user)) = &visible_to {
                        count = count.filter(
                            executions::proc_name
                                .eq_any(procs)
                                .or(executions::user_email.eq(user)),
                        );
                    }
                    count.count().get_result(c)?
                });

                let mut buckets = Vec::new();
                let mut start = since;
                while start < until {
                    buckets.push(BucketCounts {
                        start,
                        counts: counts.remove(&start).unwrap_or_default(),
                    });
                    start += bucket.width();
                }
                Ok(Stats {
                    buckets,
                    procs,
                    running,
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn buckets_align_on_utc_hours_and_days() {
        let t = at("2026-12-03 10:27:13.5");
        assert_eq!(Bucket::Hour.floor(t), at("2026-12-03 10:00:00"));
        assert_eq!(Bucket::Hour.ceil(t), Some(at("2026-12-03 11:00:00")));
        assert_eq!(Bucket::Day.floor(t), at("2026-12-03 00:00:00"));
        assert_eq!(Bucket::Day.ceil(t), Some(at("2026-12-04 00:00:00")));
        let aligned = at("2026-12-03 10:00:00");
        assert_eq!(Bucket::Hour.ceil(aligned), Some(aligned));
        assert_eq!(Bucket::parse(" Day "), Ok(Bucket::Day));
        assert!(Bucket::parse("week").unwrap_err().contains("hour or day"));
    }
}
