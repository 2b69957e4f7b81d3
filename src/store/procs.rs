//! Proc metadata: Redis keys `<prefix><name>-metadata` (the original's layout) in
//! production, the `procs` table in the embedded mode.

use diesel::prelude::*;

use crate::model::{ProcMetadata, ProcName};

use super::redis::glob_escape;
use super::schema::{proc_secrets, procs};
use super::{Db, Redis, StoreError};

const METADATA_SUFFIX: &str = "-metadata";

/// Where procs live.
#[derive(Clone)]
pub enum ProcStore {
    Db(Db),
    Redis(Redis),
}

fn encode(proc: &ProcMetadata) -> String {
    serde_json::to_string(proc).expect("proc metadata always serializes")
}

fn decode(name: &str, json: &str) -> Result<ProcMetadata, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("stored metadata of proc {name}: {e}")))
}

pub(super) fn secrets_key(redis: &Redis, name: &ProcName) -> String {
    redis.key(&format!("{name}-secret"))
}

impl ProcStore {
    /// Creates or replaces each proc, all or none.
    pub async fn upsert(&self, procs: Vec<ProcMetadata>) -> Result<(), StoreError> {
        match self {
            ProcStore::Redis(redis) => {
                let pairs: Vec<(String, String)> = procs
                    .iter()
                    .map(|p| {
                        (
                            redis.key(&format!("{}{METADATA_SUFFIX}", p.name)),
                            encode(p),
                        )
                    })
                    .collect();
                // MSET is atomic: every proc of the request, or none.
                let mut mset = redis::cmd("MSET");
                for (key, value) in &pairs {
                    mset.arg(key).arg(value);
                }
                redis.query::<()>(&mset).await
            }
            ProcStore::Db(db) => {
                db.run(move |conn| {
                    let now = super::now();
                    with_backend!(conn, |c| c.transaction(|c| {
                        for proc in &procs {
                            let row = (
                                procs::name.eq(proc.name.as_str()),
                                procs::metadata.eq(encode(proc)),
                                procs::updated_at.eq(now),
                            );
                            diesel::insert_into(procs::table)
                                .values(row)
                                .on_conflict(procs::name)
                                .do_update()
                                .set((procs::metadata.eq(encode(proc)), procs::updated_at.eq(now)))
                                .execute(c)?;
                        }
                        Ok::<_, diesel::result::Error>(())
                    }))?;
                    Ok(())
                })
                .await
            }
        }
    }

    /// Every proc, sorted by name.
    pub async fn list(&self) -> Result<Vec<ProcMetadata>, StoreError> {
        let mut all: Vec<ProcMetadata> = match self {
            ProcStore::Redis(redis) => {
                let pattern = format!("{}*{METADATA_SUFFIX}", glob_escape(redis.prefix()));
                let keys = redis.scan_keys(&pattern).await?;
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let values: Vec<Option<String>> =
                    redis.query(redis::cmd("MGET").arg(&keys)).await?;
                keys.iter()
                    .zip(values)
                    // A key deleted between SCAN and MGET is simply gone.
                    .filter_map(|(key, value)| value.map(|v| decode(key, &v)))
                    .collect::<Result<_, _>>()?
            }
            ProcStore::Db(db) => {
                db.run(|conn| {
                    let rows: Vec<(String, String)> = with_backend!(conn, |c| procs::table
                        .select((procs::name, procs::metadata))
                        .load(c))?;
                    rows.iter().map(|(name, json)| decode(name, json)).collect()
                })
                .await?
            }
        };
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    pub async fn get(&self, name: &ProcName) -> Result<Option<ProcMetadata>, StoreError> {
        let name = name.clone();
        match self {
            ProcStore::Redis(redis) => {
                let key = redis.key(&format!("{name}{METADATA_SUFFIX}"));
                let value: Option<String> = redis.query(redis::cmd("GET").arg(&key)).await?;
                value.map(|v| decode(name.as_str(), &v)).transpose()
            }
            ProcStore::Db(db) => {
                db.run(move |conn| {
                    let json: Option<String> = with_backend!(conn, |c| procs::table
                        .find(name.as_str())
                        .select(procs::metadata)
                        .first(c)
                        .optional())?;
                    json.map(|v| decode(name.as_str(), &v)).transpose()
                })
                .await
            }
        }
    }

    /// Removes the proc and its secrets; false when there was no such proc.
    pub async fn delete(&self, name: &ProcName) -> Result<bool, StoreError> {
        let name = name.clone();
        match self {
            ProcStore::Redis(redis) => {
                let metadata = redis.key(&format!("{name}{METADATA_SUFFIX}"));
                let secrets = secrets_key(redis, &name);
                let (removed, _): (u32, u32) = redis
                    .query_pipe(redis::pipe().atomic().del(&metadata).del(&secrets))
                    .await?;
                Ok(removed > 0)
            }
            ProcStore::Db(db) => {
                db.run(move |conn| {
                    let removed = with_backend!(conn, |c| c.transaction(|c| {
                        diesel::delete(
                            proc_secrets::table.filter(proc_secrets::proc_name.eq(name.as_str())),
                        )
                        .execute(c)?;
                        diesel::delete(procs::table.find(name.as_str())).execute(c)
                    }))?;
                    Ok(removed > 0)
                })
                .await
            }
        }
    }
}
