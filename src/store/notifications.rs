//! The delivery log of notifications: one row per target told of a run's end, with
//! its attempts and last answer. Targets are stored masked here (the full URL lives
//! only with the execution or schedule that names it).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::schema::notification_deliveries as deliveries;
use super::{Db, StoreError};

/// A delivery as `GET /api/v1/executions/{name}/notifications` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = deliveries)]
pub struct Delivery {
    pub id: i64,
    #[serde(skip)]
    pub execution_id: String,
    /// `webhook`, `slack` or `callback`.
    pub kind: String,
    /// The target's URL, masked (scheme, host and port).
    pub target: String,
    /// `pending` (being tried), `delivered` or `failed` (gave up).
    pub status: String,
    /// Requests made so far.
    pub attempts: i32,
    /// Its index in the execution's `notify`, or -1 for `callback_url`.
    #[serde(skip)]
    pub target_index: i32,
    /// The HTTP status of the last answer, if one came.
    pub last_status_code: Option<i32>,
    /// Why the last attempt failed, if it did (never the URL).
    pub last_error: Option<String>,
    #[serde(serialize_with = "super::executions::serialize_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::executions::serialize_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
    #[serde(serialize_with = "super::executions::serialize_utc_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<NaiveDateTime>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub attempts: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    /// `pending`, `delivered` or `failed`.
    pub status: &'static str,
}

#[derive(Clone)]
pub struct NotificationStore {
    db: Db,
}

impl NotificationStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Records a delivery about to be tried; returns its id.
    pub async fn start(
        &self,
        execution_id: &str,
        kind: &str,
        masked_target: &str,
        target_index: i32,
    ) -> Result<i64, StoreError> {
        let (execution_id, kind, target) = (
            execution_id.to_owned(),
            kind.to_owned(),
            masked_target.to_owned(),
        );
        self.db
            .run(move |conn| {
                let now = super::now();
                let id = with_backend!(conn, |c| diesel::insert_into(deliveries::table)
                    .values((
                        deliveries::execution_id.eq(&execution_id),
                        deliveries::kind.eq(&kind),
                        deliveries::target.eq(&target),
                        deliveries::status.eq("pending"),
                        deliveries::attempts.eq(0),
                        deliveries::target_index.eq(target_index),
                        deliveries::created_at.eq(now),
                        deliveries::updated_at.eq(now),
                    ))
                    .returning(deliveries::id)
                    .get_result::<i64>(c))?;
                Ok(id)
            })
            .await
    }

    /// Records an attempt's outcome.
    pub async fn record(&self, id: i64, attempt: Attempt) -> Result<(), StoreError> {
        self.db
            .run(move |conn| {
                let now = super::now();
                let delivered_at = (attempt.status == "delivered").then_some(now);
                with_backend!(conn, |c| diesel::update(deliveries::table.find(id))
                    .set((
                        deliveries::status.eq(attempt.status),
                        deliveries::attempts.eq(attempt.attempts),
                        deliveries::last_status_code.eq(attempt.status_code),
                        deliveries::last_error.eq(&attempt.error),
                        deliveries::updated_at.eq(now),
                        deliveries::delivered_at.eq(delivered_at),
                    ))
                    .execute(c))?;
                Ok(())
            })
            .await
    }

    /// Takes over pending deliveries nobody has moved on since `cutoff` (their replica
    /// died, or stopped mid-way), at most `limit`: each is claimed by one conditional
    /// update, so only one replica resumes it. Returns them with their execution's name.
    pub async fn claim_stale(
        &self,
        cutoff: NaiveDateTime,
        limit: i64,
    ) -> Result<Vec<(Delivery, String)>, StoreError> {
        use super::schema::executions;
        self.db
            .run(move |conn| {
                let now = super::now();
                let stale: Vec<(Delivery, String)> = with_backend!(conn, |c| deliveries::table
                    .inner_join(executions::table)
                    .filter(deliveries::status.eq("pending"))
                    .filter(deliveries::updated_at.lt(cutoff))
                    .order(deliveries::id)
                    .limit(limit)
                    .select((Delivery::as_select(), executions::name))
                    .load(c))?;
                let mut claimed = Vec::new();
                for (delivery, name) in stale {
                    let won = with_backend!(conn, |c| diesel::update(
                        deliveries::table
                            .find(delivery.id)
                            .filter(deliveries::status.eq("pending"))
                            .filter(deliveries::updated_at.eq(delivery.updated_at))
                    )
                    .set(deliveries::updated_at.eq(now))
                    .execute(c))?;
                    if won == 1 {
                        claimed.push((delivery, name));
                    }
                }
                Ok(claimed)
            })
            .await
    }

    /// An execution's deliveries, oldest first.
    pub async fn list(&self, execution_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let execution_id = execution_id.to_owned();
        self.db
            .run(move |conn| {
                let rows = with_backend!(conn, |c| deliveries::table
                    .filter(deliveries::execution_id.eq(&execution_id))
                    .order(deliveries::id)
                    .select(Delivery::as_select())
                    .load(c))?;
                Ok(rows)
            })
            .await
    }
}
