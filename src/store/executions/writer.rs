//! Group commit for execution records. Every insert and status change goes to one
//! writer thread; it takes whatever has queued while its last transaction ran and
//! writes it all in the next one. Under load many executions share one commit (one
//! fsync on PostgreSQL, one write lock on SQLite) instead of each waiting for its own;
//! at a trickle a write is alone in its transaction and waits for nothing.
//!
//! Each write is still answered on its own: when a batch fails, its writes are tried
//! again one by one, so one bad write (a duplicate name) never fails the others. A
//! write alone in its batch is one statement with no BEGIN/COMMIT around it (one
//! statement is atomic by itself): one round trip to the database instead of three.
//!
//! A write that meets a database restart, a dropped connection or a database that
//! cannot be reached is tried again with backoff until it lands, never dropped: the
//! callers wait (a run's final status is never lost to a blip), and as they wait no
//! more work is taken from them, which bounds memory. An insert retried after a
//! connection dropped during its commit may find its own row: that counts as written.
//!
//! The writer has a connection of its own ([`Db::reserved`]), beyond the pool's size,
//! so a small pool is never all held by it. (A second writer for inserts alone was
//! tried on PostgreSQL: submissions were answered no sooner at 100/s, and completed
//! runs per second fell by about 15% under load, the two writers' commits competing.)

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use tokio::sync::oneshot;

use super::Row;
use crate::model::Status;
use crate::store::schema::executions;
use crate::store::{Db, StoreError};

/// Writes taken into one transaction at most.
const MAX_BATCH: usize = 256;
/// The first and the longest wait before a write that met a database blip is retried.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// One write to an execution record.
#[derive(Debug)]
pub(super) enum Op {
    /// A new execution (its row as built by the caller).
    Insert(Box<Row>),
    /// A status step, refused (answered `None`) unless `to` may follow the stored status.
    Transition {
        name: String,
        to: Status,
        change: super::Transition,
    },
    /// The attempt count alone.
    Attempts { name: String, attempts: i32 },
}

/// The row as written by a status step, or `None` when the step was refused.
pub(super) type Written = Option<Row>;

type Reply = oneshot::Sender<Result<Written, StoreError>>;

/// The columns a status step sets; `None` leaves a column as it is.
#[derive(AsChangeset)]
#[diesel(table_name = executions)]
struct StatusChange<'a> {
    status: &'a str,
    updated_at: NaiveDateTime,
    started_at: Option<NaiveDateTime>,
    finished_at: Option<NaiveDateTime>,
    reason: Option<&'a str>,
    exit_code: Option<i32>,
    attempts: Option<i32>,
}

/// The sending end; the thread stops when the last clone is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<(Op, Reply)>,
}

impl Writer {
    /// Starts the writer thread for replica `me` (the owner it writes new records with,
    /// and whose runs' statuses it may change).
    pub(super) fn start(db: Db, me: Arc<str>) -> Self {
        let db = db.reserved();
        let (queue, pending) = mpsc::channel();
        std::thread::Builder::new()
            .name("execution-writer".into())
            .spawn(move || {
                // The connection stays with the writer between batches (no checkout,
                // no validation query per commit); an error gives it back.
                let mut held = None;
                while let Ok(first) = pending.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match pending.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    write_batch(&db, &me, &mut held, batch);
                }
            })
            .expect("the execution writer thread starts");
        Self { queue }
    }

    /// Queues `op` and waits for its transaction to commit.
    pub(super) async fn write(&self, op: Op) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((op, reply))
            .map_err(|_| StoreError::Task("the execution writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Task("the execution writer dropped a write".into()))?
    }
}

/// Applies one write on a connection of either backend (a macro: the two are
/// different types).
macro_rules! apply {
    ($c:ident, $op:expr, $me:expr) => {
        match $op {
            Op::Insert(row) => insert_row!($c, row).map(|_| None),
            Op::Transition { name, to, change } => {
                let now = crate::store::now();
                let from: Vec<&'static str> = Status::predecessors(*to)
                    .iter()
                    .map(|s| s.as_str())
                    .collect();
                diesel::update(
                    executions::table
                        .filter(executions::name.eq(name))
                        .filter(executions::status.eq_any(from))
                        // Only the owner writes a run's status (a replica that lost
                        // its lease must not overwrite what the new owner decides).
                        .filter(executions::owner.eq($me).or(executions::owner.is_null())),
                )
                .set(StatusChange {
                    status: to.as_str(),
                    updated_at: now,
                    started_at: (*to == Status::Running).then_some(now),
                    finished_at: to.is_final().then_some(now),
                    reason: change.reason.as_deref(),
                    exit_code: change.exit_code,
                    attempts: change.attempts,
                })
                .returning(Row::as_returning())
                .get_result::<Row>($c)
                .optional()
            }
            Op::Attempts { name, attempts } => {
                diesel::update(executions::table.filter(executions::name.eq(name)))
                    .set(executions::attempts.eq(*attempts))
                    .execute($c)
                    .map(|_| None)
            }
        }
    };
}

type Held = Option<r2d2::PooledConnection<crate::store::ConnectionManager>>;

/// Commits `batch`, retrying through database blips; answers each write.
fn write_batch(db: &Db, me: &str, held: &mut Held, batch: Vec<(Op, Reply)>) {
    let mut wait = RETRY_FIRST;
    let mut retried = false;
    let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().unzip();
    let failed = loop {
        let mut conn = match held.take().map_or_else(|| db.connection(), Ok) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, writes = ops.len(), "the database is unreachable; execution writes wait and retry");
                std::thread::sleep(wait);
                wait = (wait * 2).min(RETRY_MAX);
                retried = true;
                continue;
            }
        };
        let together = match ops.as_slice() {
            [op] => with_backend!(&mut *conn, |c| apply!(c, op, me)).map(|written| vec![written]),
            _ => with_backend!(&mut *conn, |c| c.transaction(|c| {
                ops.iter()
                    .map(|op| apply!(c, op, me))
                    .collect::<QueryResult<Vec<Written>>>()
            })),
        };
        match together {
            Ok(written) => {
                for (reply, written) in replies.into_iter().zip(written) {
                    let _ = reply.send(Ok(written));
                }
                *held = Some(conn);
                return;
            }
            Err(e) if crate::store::is_transient(&e) => {
                // The connection is dropped with `conn`; the next try takes a new one.
                tracing::warn!(error = %e, writes = ops.len(), "execution writes met a database blip; retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(RETRY_MAX);
                retried = true;
            }
            Err(e) => {
                *held = Some(conn);
                break e;
            }
        }
    };
    if ops.len() > 1 {
        // One bad write (a duplicate name) must not fail the others: each alone.
        for (op, reply) in ops.into_iter().zip(replies) {
            write_batch(db, me, held, vec![(op, reply)]);
        }
        return;
    }
    let (Some(op), Some(reply)) = (ops.first(), replies.into_iter().next()) else {
        return;
    };
    if retried && matches!(op, Op::Insert(_)) && is_unique_violation(&failed) {
        // The first try committed before its connection dropped.
        let _ = reply.send(Ok(None));
    } else {
        let _ = reply.send(Err(failed.into()));
    }
}

fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}
