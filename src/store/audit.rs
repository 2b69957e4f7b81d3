//! The audit log: who changed what, when and from where. Rows are only inserted here;
//! nothing in the API updates or deletes one (the retention purge removes old rows).
//! Details hold names and settings, never a secret's value or a token.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::Value;

use super::schema::audit_events;
use super::{Db, StoreError};

/// What kind of object a change was made to.
pub const KINDS: &[&str] = &[
    "proc",
    "secret",
    "schedule",
    "user",
    "token",
    "session",
    "execution",
];

/// A change about to be recorded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Who: an e-mail, or `cli:<unix user>` for `proctord` admin commands.
    pub actor: String,
    /// From where: the client's IP address (`None` for local commands).
    pub address: Option<String>,
    /// What happened, as `<kind>.<verb>`: `proc.updated`, `secrets.set`, ...
    pub action: String,
    /// One of [`KINDS`].
    pub kind: &'static str,
    /// Which object: a proc or execution name, a schedule id, an e-mail, ...
    pub object: String,
    /// What changed (JSON).
    pub details: Value,
}

/// A recorded change, as `GET /api/v1/audit` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Increasing with time: pass the last one seen as `before` for the next page.
    pub id: i64,
    #[serde(serialize_with = "super::executions::serialize_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub at: NaiveDateTime,
    pub actor: String,
    pub address: Option<String>,
    pub action: String,
    pub kind: String,
    pub object: String,
    #[schema(value_type = Object)]
    pub details: Value,
}

/// Which events to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub kind: Option<String>,
    pub object: Option<String>,
    pub action: Option<String>,
    pub since: Option<NaiveDateTime>,
    pub until: Option<NaiveDateTime>,
    /// Only events with a smaller id (the cursor of the next page).
    pub before: Option<i64>,
    pub limit: i64,
}

type Row = (
    i64,
    NaiveDateTime,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
);

#[derive(Clone)]
pub struct AuditStore {
    db: Db,
}

impl AuditStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Stores one event, stamped now.
    pub async fn record(&self, event: NewEvent) -> Result<(), StoreError> {
        self.record_all(vec![event]).await
    }

    /// Stores events in one statement, stamped now, in their order.
    pub async fn record_all(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        self.db
            .run(move |conn| {
                let at = super::now();
                let rows: Vec<_> = events
                    .iter()
                    .map(|event| {
                        (
                            audit_events::at.eq(at),
                            audit_events::actor.eq(&event.actor),
                            audit_events::address.eq(&event.address),
                            audit_events::action.eq(&event.action),
                            audit_events::kind.eq(event.kind),
                            audit_events::object.eq(&event.object),
                            audit_events::details.eq(event.details.to_string()),
                        )
                    })
                    .collect();
                with_backend!(conn, |c| diesel::insert_into(audit_events::table)
                    .values(&rows)
                    .execute(c))?;
                Ok(())
            })
            .await
    }

    /// Events matching `filter`, newest first, at most `filter.limit`.
    pub async fn list(&self, filter: AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.db
            .run(move |conn| {
                let rows: Vec<Row> = with_backend!(conn, |c| {
                    let mut query = audit_events::table
                        .select((
                            audit_events::id,
                            audit_events::at,
                            audit_events::actor,
                            audit_events::address,
                            audit_events::action,
                            audit_events::kind,
                            audit_events::object,
                            audit_events::details,
                        ))
                        .order(audit_events::id.desc())
                        .limit(filter.limit)
                        .into_boxed();
                    if let Some(actor) = &filter.actor {
                        query = query.filter(audit_events::actor.eq(actor.clone()));
                    }
                    if let Some(kind) = &filter.kind {
                        query = query.filter(audit_events::kind.eq(kind.clone()));
                    }
                    if let Some(object) = &filter.object {
                        query = query.filter(audit_events::object.eq(object.clone()));
                    }
                    if let Some(action) = &filter.action {
                        query = query.filter(audit_events::action.eq(action.clone()));
                    }
                    if let Some(since) = filter.since {
                        query = query.filter(audit_events::at.ge(since));
                    }
                    if let Some(until) = filter.until {
                        query = query.filter(audit_events::at.lt(until));
                    }
                    if let Some(before) = filter.before {
                        query = query.filter(audit_events::id.lt(before));
                    }
                    query.load(c)?
                });
                rows.into_iter()
                    .map(|(id, at, actor, address, action, kind, object, details)| {
                        let details = serde_json::from_str(&details)
                            .map_err(|e| StoreError::Corrupt(format!("audit event {id}: {e}")))?;
                        Ok(AuditEvent {
                            id,
                            at,
                            actor,
                            address,
                            action,
                            kind,
                            object,
                            details,
                        })
                    })
                    .collect()
            })
            .await
    }

    /// Removes events older than `cutoff`, at most `batch` of them; returns how many.
    pub async fn purge_before(
        &self,
        cutoff: NaiveDateTime,
        batch: i64,
    ) -> Result<usize, StoreError> {
        self.db
            .run(move |conn| {
                let removed = with_backend!(conn, |c| {
                    let ids: Vec<i64> = audit_events::table
                        .filter(audit_events::at.lt(cutoff))
                        .select(audit_events::id)
                        .order(audit_events::id)
                        .limit(batch)
                        .load(c)?;
                    diesel::delete(audit_events::table.filter(audit_events::id.eq_any(ids)))
                        .execute(c)?
                });
                Ok(removed)
            })
            .await
    }
}
