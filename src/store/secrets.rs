//! Proc secrets, each value sealed on its own ([`super::crypto`]): a Redis hash
//! `<prefix><name>-secret` (field = secret name) in production, the `proc_secrets`
//! table in the embedded mode. Values come back out only through [`SecretStore::reveal`],
//! which builds an execution's environment.

use std::collections::BTreeMap;

use diesel::prelude::*;

use crate::config::Sensitive;
use crate::model::{EnvName, ProcName};

use super::crypto::Sealer;
use super::procs::secrets_key;
use super::schema::proc_secrets;
use super::{Db, Redis, StoreError};

#[derive(Clone)]
enum Backend {
    Db(Db),
    Redis(Redis),
}

#[derive(Clone)]
pub struct SecretStore {
    backend: Backend,
    sealer: Sealer,
}

fn context(proc: &ProcName, secret: &str) -> String {
    format!("{proc}/{secret}")
}

impl SecretStore {
    pub fn db(db: Db, sealer: Sealer) -> Self {
        Self {
            backend: Backend::Db(db),
            sealer,
        }
    }

    pub fn redis(redis: Redis, sealer: Sealer) -> Self {
        Self {
            backend: Backend::Redis(redis),
            sealer,
        }
    }

    /// Seals and stores `secrets` (adding to or replacing the proc's others); returns the
    /// names of every secret the proc now has.
    pub async fn put(
        &self,
        proc: &ProcName,
        secrets: BTreeMap<EnvName, Sensitive<String>>,
    ) -> Result<Vec<String>, StoreError> {
        let sealed: Vec<(String, Vec<u8>)> = secrets
            .iter()
            .map(|(name, value)| {
                let sealed = self
                    .sealer
                    .seal(&context(proc, name.as_str()), value.expose().as_bytes());
                (name.as_str().to_owned(), sealed)
            })
            .collect();
        match &self.backend {
            Backend::Redis(redis) => {
                let key = secrets_key(redis, proc);
                let (mut names,): (Vec<String>,) = redis
                    .query_pipe(
                        redis::pipe()
                            .atomic()
                            .hset_multiple(&key, &sealed)
                            .ignore()
                            .hkeys(&key),
                    )
                    .await?;
                names.sort();
                Ok(names)
            }
            Backend::Db(db) => {
                let proc = proc.clone();
                db.run(move |conn| {
                    let now = super::now();
                    let names = with_backend!(conn, |c| c.transaction(|c| {
                        for (name, value) in &sealed {
                            diesel::insert_into(proc_secrets::table)
                                .values((
                                    proc_secrets::proc_name.eq(proc.as_str()),
                                    proc_secrets::secret_name.eq(name),
                                    proc_secrets::sealed.eq(value),
                                    proc_secrets::updated_at.eq(now),
                                ))
                                .on_conflict((proc_secrets::proc_name, proc_secrets::secret_name))
                                .do_update()
                                .set((
                                    proc_secrets::sealed.eq(value),
                                    proc_secrets::updated_at.eq(now),
                                ))
                                .execute(c)?;
                        }
                        proc_secrets::table
                            .filter(proc_secrets::proc_name.eq(proc.as_str()))
                            .select(proc_secrets::secret_name)
                            .order(proc_secrets::secret_name)
                            .load::<String>(c)
                    }))?;
                    Ok(names)
                })
                .await
            }
        }
    }

    /// The names of the proc's secrets, sorted; never their values.
    pub async fn names(&self, proc: &ProcName) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self.sealed(proc).await?.into_keys().collect();
        names.sort();
        Ok(names)
    }

    /// The proc's secrets in the clear, for an execution's environment only.
    pub async fn reveal(
        &self,
        proc: &ProcName,
    ) -> Result<BTreeMap<String, Sensitive<String>>, StoreError> {
        self.sealed(proc)
            .await?
            .into_iter()
            .map(|(name, sealed)| {
                let context = context(proc, &name);
                let plain = self.sealer.open(&context, &sealed)?;
                let value = String::from_utf8(plain)
                    .map_err(|_| StoreError::Corrupt(format!("secret {context} is not UTF-8")))?;
                Ok((name, Sensitive::new(value)))
            })
            .collect()
    }

    /// Removes every secret of the proc; returns how many there were.
    pub async fn delete(&self, proc: &ProcName) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let key = secrets_key(redis, proc);
                let (count, _): (usize, u32) = redis
                    .query_pipe(redis::pipe().atomic().hlen(&key).del(&key))
                    .await?;
                Ok(count)
            }
            Backend::Db(db) => {
                let proc = proc.clone();
                db.run(move |conn| {
                    let filter = proc_secrets::proc_name.eq(proc.as_str().to_owned());
                    let removed = with_backend!(conn, |c| diesel::delete(
                        proc_secrets::table.filter(filter)
                    )
                    .execute(c))?;
                    Ok(removed)
                })
                .await
            }
        }
    }

    /// The stored (sealed) bytes by secret name.
    async fn sealed(&self, proc: &ProcName) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let key = secrets_key(redis, proc);
                redis.query(redis::cmd("HGETALL").arg(&key)).await
            }
            Backend::Db(db) => {
                let proc = proc.clone();
                db.run(move |conn| {
                    let rows: Vec<(String, Vec<u8>)> =
                        with_backend!(conn, |c| proc_secrets::table
                            .filter(proc_secrets::proc_name.eq(proc.as_str()))
                            .select((proc_secrets::secret_name, proc_secrets::sealed))
                            .load(c))?;
                    Ok(rows.into_iter().collect())
                })
                .await
            }
        }
    }
}
