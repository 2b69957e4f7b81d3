//! Users, their groups and their API tokens. A token is shown once, at creation;
//! only its SHA-256 is stored.

use base64::Engine as _;
use diesel::prelude::*;
use sha2::{Digest, Sha256};

use crate::model::Email;

use super::schema::{api_tokens, console_sessions, user_groups, users};
use super::{Db, StoreError};

/// A user as the API sees one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub email: String,
    pub is_admin: bool,
    pub groups: Vec<String>,
}

/// A user's groups, sorted, on either backend's connection `c`.
macro_rules! groups_of {
    ($c:expr, $email:expr) => {
        user_groups::table
            .filter(user_groups::user_email.eq($email))
            .select(user_groups::group_name)
            .order(user_groups::group_name)
            .load::<String>($c)
    };
}

#[derive(Clone)]
pub struct UserStore {
    db: Db,
}

/// The prefix of every token, so a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "pct_";

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl UserStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Creates the user, or sets an existing one's groups and admin flag.
    pub async fn upsert(
        &self,
        email: &Email,
        groups: Vec<String>,
        is_admin: bool,
    ) -> Result<User, StoreError> {
        let email = email.as_str().to_owned();
        let mut groups = groups;
        groups.sort();
        groups.dedup();
        self.db
            .run(move |conn| {
                let now = super::now();
                with_backend!(conn, |c| c.transaction(|c| {
                    diesel::insert_into(users::table)
                        .values((
                            users::email.eq(&email),
                            users::is_admin.eq(is_admin),
                            users::created_at.eq(now),
                        ))
                        .on_conflict(users::email)
                        .do_update()
                        .set(users::is_admin.eq(is_admin))
                        .execute(c)?;
                    diesel::delete(user_groups::table.filter(user_groups::user_email.eq(&email)))
                        .execute(c)?;
                    for group in &groups {
                        diesel::insert_into(user_groups::table)
                            .values((
                                user_groups::user_email.eq(&email),
                                user_groups::group_name.eq(group),
                            ))
                            .execute(c)?;
                    }
                    Ok::<_, diesel::result::Error>(())
                }))?;
                Ok(User {
                    email,
                    is_admin,
                    groups,
                })
            })
            .await
    }

    /// Every user with their groups, sorted by e-mail.
    pub async fn list(&self) -> Result<Vec<User>, StoreError> {
        self.db
            .run(|conn| {
                let (people, memberships) = with_backend!(conn, |c| {
                    let people: Vec<(String, bool)> = users::table
                        .select((users::email, users::is_admin))
                        .order(users::email)
                        .load(c)?;
                    let memberships: Vec<(String, String)> = user_groups::table
                        .select((user_groups::user_email, user_groups::group_name))
                        .order((user_groups::user_email, user_groups::group_name))
                        .load(c)?;
                    (people, memberships)
                });
                Ok(people
                    .into_iter()
                    .map(|(email, is_admin)| User {
                        groups: memberships
                            .iter()
                            .filter(|(e, _)| *e == email)
                            .map(|(_, g)| g.clone())
                            .collect(),
                        email,
                        is_admin,
                    })
                    .collect())
            })
            .await
    }

    /// A new token for an existing user; the only time its text exists.
    pub async fn create_token(&self, email: &Email) -> Result<String, StoreError> {
        let random: [u8; 32] = rand::random();
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        );
        let hash = hash_token(&token);
        let email = email.as_str().to_owned();
        self.db
            .run(move |conn| {
                with_backend!(conn, |c| c.transaction(|c| {
                    let exists: i64 = users::table.find(&email).count().get_result(c)?;
                    if exists == 0 {
                        return Ok(Err(StoreError::NotFound));
                    }
                    diesel::insert_into(api_tokens::table)
                        .values((
                            api_tokens::id.eq(uuid::Uuid::new_v4().to_string()),
                            api_tokens::user_email.eq(&email),
                            api_tokens::token_hash.eq(&hash),
                            api_tokens::created_at.eq(super::now()),
                        ))
                        .execute(c)?;
                    Ok::<_, diesel::result::Error>(Ok(()))
                }))??;
                Ok(token)
            })
            .await
    }

    /// Removes every token of the user; returns how many there were.
    pub async fn revoke_tokens(&self, email: &Email) -> Result<usize, StoreError> {
        let email = email.as_str().to_owned();
        self.db
            .run(move |conn| {
                let filter = api_tokens::user_email.eq(email);
                Ok(with_backend!(conn, |c| diesel::delete(
                    api_tokens::table.filter(filter)
                )
                .execute(c))?)
            })
            .await
    }

    /// The user whose e-mail is `email` and who holds `token`, if any.
    pub async fn authenticate(
        &self,
        email: &Email,
        token: &str,
    ) -> Result<Option<User>, StoreError> {
        Ok(self.holder(email, token).await?.map(|(user, _)| user))
    }

    /// The user holding `token`, with the token's id.
    async fn holder(
        &self,
        email: &Email,
        token: &str,
    ) -> Result<Option<(User, String)>, StoreError> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let hash = hash_token(token);
        let email = email.as_str().to_owned();
        self.db
            .run(move |conn| {
                let found = with_backend!(conn, |c| {
                    let token: Option<(String, bool)> = api_tokens::table
                        .inner_join(users::table)
                        .filter(api_tokens::token_hash.eq(&hash))
                        .filter(users::email.eq(&email))
                        .select((api_tokens::id, users::is_admin))
                        .first(c)
                        .optional()?;
                    match token {
                        Some((id, is_admin)) => Some((id, is_admin, groups_of!(c, &email)?)),
                        None => None,
                    }
                });
                Ok(found.map(|(id, is_admin, groups)| {
                    (
                        User {
                            email,
                            is_admin,
                            groups,
                        },
                        id,
                    )
                }))
            })
            .await
    }

    /// Exchanges an e-mail and access token for a console session that lasts `length`:
    /// the user and the session's secret (the cookie's value, never stored), or `None`
    /// when the token is not valid for the e-mail. Sessions past their end are removed.
    pub async fn start_session(
        &self,
        email: &Email,
        token: &str,
        length: chrono::Duration,
    ) -> Result<Option<(User, String, chrono::NaiveDateTime)>, StoreError> {
        let Some((user, token_id)) = self.holder(email, token).await? else {
            return Ok(None);
        };
        let random: [u8; 32] = rand::random();
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        let hash = hash_token(&secret);
        let email = user.email.clone();
        let now = super::now();
        let expires = now + length;
        self.db
            .run(move |conn| {
                with_backend!(conn, |c| {
                    diesel::delete(
                        console_sessions::table.filter(console_sessions::expires_at.le(now)),
                    )
                    .execute(c)?;
                    diesel::insert_into(console_sessions::table)
                        .values((
                            console_sessions::id_hash.eq(&hash),
                            console_sessions::user_email.eq(&email),
                            console_sessions::token_id.eq(&token_id),
                            console_sessions::created_at.eq(now),
                            console_sessions::expires_at.eq(expires),
                        ))
                        .execute(c)
                })?;
                Ok(())
            })
            .await?;
        Ok(Some((user, secret, expires)))
    }

    /// The user of a live console session.
    pub async fn session(&self, secret: &str) -> Result<Option<User>, StoreError> {
        let hash = hash_token(secret);
        self.db
            .run(move |conn| {
                let found = with_backend!(conn, |c| {
                    let user: Option<(String, bool)> = console_sessions::table
                        .inner_join(users::table)
                        .filter(console_sessions::id_hash.eq(&hash))
                        .filter(console_sessions::expires_at.gt(super::now()))
                        .select((users::email, users::is_admin))
                        .first(c)
                        .optional()?;
                    match user {
                        Some((email, is_admin)) => {
                            let groups = groups_of!(c, &email)?;
                            Some(User {
                                email,
                                is_admin,
                                groups,
                            })
                        }
                        None => None,
                    }
                });
                Ok(found)
            })
            .await
    }

    /// Ends a console session (signing out); ending one that is gone is no error.
    pub async fn end_session(&self, secret: &str) -> Result<(), StoreError> {
        let hash = hash_token(secret);
        self.db
            .run(move |conn| {
                with_backend!(conn, |c| diesel::delete(
                    console_sessions::table.filter(console_sessions::id_hash.eq(&hash))
                )
                .execute(c))?;
                Ok(())
            })
            .await
    }
}
