//! Stored log lines: `execution_logs (execution_id, seq, line, logged_at)`, appended in
//! batches by the LogFanout and read back in `seq` order.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::execution_logs;
use super::{Db, StoreError};

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Insertable)]
#[diesel(table_name = execution_logs)]
pub struct StoredLine {
    pub execution_id: String,
    pub seq: i64,
    pub line: String,
    pub logged_at: NaiveDateTime,
}

/// Rows per INSERT: 4 parameters each stays far under SQLite's 32,766.
const CHUNK: usize = 1000;

#[derive(Clone)]
pub struct LogStore {
    db: Db,
}

impl LogStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Appends lines in one transaction. A line already stored (same execution and
    /// seq) is kept as it was, so a retried batch never duplicates.
    pub async fn append(&self, lines: Vec<StoredLine>) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.db
            .run(move |conn| {
                // The one backend difference: how "skip a row already there" is spelled.
                match conn {
                    super::DbConnection::Postgresql(c) => c.transaction(|c| {
                        for chunk in lines.chunks(CHUNK) {
                            diesel::insert_into(execution_logs::table)
                                .values(chunk)
                                .on_conflict_do_nothing()
                                .execute(c)?;
                        }
                        Ok::<_, diesel::result::Error>(())
                    }),
                    super::DbConnection::Sqlite(c) => c.transaction(|c| {
                        for chunk in lines.chunks(CHUNK) {
                            diesel::insert_or_ignore_into(execution_logs::table)
                                .values(chunk)
                                .execute(c)?;
                        }
                        Ok(())
                    }),
                }?;
                Ok(())
            })
            .await
    }

    /// Up to `limit` lines with `seq > after`, in order.
    pub async fn read(
        &self,
        execution_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredLine>, StoreError> {
        let id = execution_id.to_owned();
        self.db
            .run(move |conn| {
                Ok(with_backend!(conn, |c| execution_logs::table
                    .filter(execution_logs::execution_id.eq(&id))
                    .filter(execution_logs::seq.gt(after))
                    .order(execution_logs::seq)
                    .limit(limit)
                    .load(c))?)
            })
            .await
    }

    /// The highest stored seq of an execution (0 when none).
    pub async fn last_seq(&self, execution_id: &str) -> Result<i64, StoreError> {
        let id = execution_id.to_owned();
        self.db
            .run(move |conn| {
                let max: Option<i64> = with_backend!(conn, |c| execution_logs::table
                    .filter(execution_logs::execution_id.eq(&id))
                    .select(diesel::dsl::max(execution_logs::seq))
                    .first(c))?;
                Ok(max.unwrap_or(0))
            })
            .await
    }
}
