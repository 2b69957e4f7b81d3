//! Users, their groups and their API tokens. A token is shown once, at creation;
//! only its SHA-256 is stored.

use base64::Engine as _;
use chrono::NaiveDateTime;
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

/// What is stored about an API token (never its text).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    pub name: String,
    #[serde(serialize_with = "super::executions::serialize_utc")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::executions::serialize_utc_option")]
    pub expires_at: Option<NaiveDateTime>,
    /// To the minute: uses within a minute of the last one written are not written.
    #[serde(serialize_with = "super::executions::serialize_utc_option")]
    pub last_used_at: Option<NaiveDateTime>,
}

/// What checking an e-mail and token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Valid(User),
    /// The token was the user's, but its time is up.
    Expired {
        name: String,
        at: NaiveDateTime,
    },
    /// No such token for this e-mail (or no such user).
    Invalid,
}

/// What a console sign-in found.
#[derive(Debug, Clone)]
pub enum SessionStart {
    /// The user, the session's secret (the cookie's value, never stored) and its end.
    Started {
        user: User,
        secret: String,
        expires: NaiveDateTime,
    },
    Expired {
        name: String,
        at: NaiveDateTime,
    },
    Invalid,
}

enum Holder {
    Valid(User, String),
    Expired { name: String, at: NaiveDateTime },
    Invalid,
}

/// A token row as sign-in reads it: id, name, admin flag, expiry, last use.
type HeldToken = (
    String,
    String,
    bool,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
);

/// How stale a token's `last_used_at` may be before a use writes it again.
const LAST_USED_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// A token's name: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn check_token_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "{:?} is not a token name: use 1 to 64 letters, digits, '.', '_' or '-'",
            crate::model::ids::truncate(name, 70)
        ));
    }
    Ok(name.to_owned())
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

    /// A new token for an existing user, named `name` (made up when `None`) and valid
    /// until `expires_at` (forever when `None`): the token's text, the only time it
    /// exists, and what is stored about it. A name the user already has is a conflict.
    pub async fn create_token(
        &self,
        email: &Email,
        name: Option<&str>,
        expires_at: Option<NaiveDateTime>,
    ) -> Result<(String, TokenInfo), StoreError> {
        let random: [u8; 32] = rand::random();
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        );
        let hash = hash_token(&token);
        let email = email.as_str().to_owned();
        let id = uuid::Uuid::new_v4().to_string();
        let name = match name {
            Some(name) => check_token_name(name).map_err(StoreError::Invalid)?,
            None => format!("token-{}", &id[..8]),
        };
        let info = TokenInfo {
            name,
            created_at: super::now(),
            expires_at,
            last_used_at: None,
        };
        let stored = info.clone();
        self.db
            .run(move |conn| {
                with_backend!(conn, |c| c.transaction(|c| {
                    let exists: i64 = users::table.find(&email).count().get_result(c)?;
                    if exists == 0 {
                        return Ok(Err(StoreError::NotFound));
                    }
                    let taken: i64 = api_tokens::table
                        .filter(api_tokens::user_email.eq(&email))
                        .filter(api_tokens::name.eq(&stored.name))
                        .count()
                        .get_result(c)?;
                    if taken > 0 {
                        return Ok(Err(StoreError::Conflict(format!(
                            "{email} already has a token named {:?}: pick another name, or revoke that one first",
                            stored.name
                        ))));
                    }
                    diesel::insert_into(api_tokens::table)
                        .values((
                            api_tokens::id.eq(&id),
                            api_tokens::user_email.eq(&email),
                            api_tokens::token_hash.eq(&hash),
                            api_tokens::created_at.eq(stored.created_at),
                            api_tokens::name.eq(&stored.name),
                            api_tokens::expires_at.eq(stored.expires_at),
                        ))
                        .execute(c)?;
                    Ok::<_, diesel::result::Error>(Ok(()))
                }))??;
                Ok(())
            })
            .await?;
        Ok((token, info))
    }

    /// A user's tokens (never their text), by name; `NotFound` for an unknown user.
    pub async fn tokens(&self, email: &Email) -> Result<Vec<TokenInfo>, StoreError> {
        let email = email.as_str().to_owned();
        self.db
            .run(move |conn| {
                let (exists, tokens) = with_backend!(conn, |c| {
                    let exists: i64 = users::table.find(&email).count().get_result(c)?;
                    let tokens: Vec<(
                        String,
                        NaiveDateTime,
                        Option<NaiveDateTime>,
                        Option<NaiveDateTime>,
                    )> = api_tokens::table
                        .filter(api_tokens::user_email.eq(&email))
                        .select((
                            api_tokens::name,
                            api_tokens::created_at,
                            api_tokens::expires_at,
                            api_tokens::last_used_at,
                        ))
                        .order(api_tokens::name)
                        .load(c)?;
                    (exists, tokens)
                });
                if exists == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(tokens
                    .into_iter()
                    .map(|(name, created_at, expires_at, last_used_at)| TokenInfo {
                        name,
                        created_at,
                        expires_at,
                        last_used_at,
                    })
                    .collect())
            })
            .await
    }

    /// Removes the user's token named `name`, or every token of the user when `None`;
    /// returns how many went. Console sessions signed in with them end too.
    pub async fn revoke_tokens(
        &self,
        email: &Email,
        name: Option<&str>,
    ) -> Result<usize, StoreError> {
        let email = email.as_str().to_owned();
        let name = name.map(str::to_owned);
        self.db
            .run(move |conn| {
                Ok(with_backend!(conn, |c| {
                    let mut query = diesel::delete(api_tokens::table)
                        .filter(api_tokens::user_email.eq(&email))
                        .into_boxed();
                    if let Some(name) = &name {
                        query = query.filter(api_tokens::name.eq(name));
                    }
                    query.execute(c)
                })?)
            })
            .await
    }

    /// The user whose e-mail is `email` and who holds `token`, if any.
    pub async fn authenticate(&self, email: &Email, token: &str) -> Result<TokenCheck, StoreError> {
        Ok(match self.holder(email, token).await? {
            Holder::Valid(user, _) => TokenCheck::Valid(user),
            Holder::Expired { name, at } => TokenCheck::Expired { name, at },
            Holder::Invalid => TokenCheck::Invalid,
        })
    }

    /// Who holds `token` for `email`, with the token's id. A valid token's last use is
    /// written at most once a minute, so a busy client costs no write per request.
    async fn holder(&self, email: &Email, token: &str) -> Result<Holder, StoreError> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(Holder::Invalid);
        }
        let hash = hash_token(token);
        let email = email.as_str().to_owned();
        self.db
            .run(move |conn| {
                let now = super::now();
                let found = with_backend!(conn, |c| {
                    let token: Option<HeldToken> = api_tokens::table
                        .inner_join(users::table)
                        .filter(api_tokens::token_hash.eq(&hash))
                        .filter(users::email.eq(&email))
                        .select((
                            api_tokens::id,
                            api_tokens::name,
                            users::is_admin,
                            api_tokens::expires_at,
                            api_tokens::last_used_at,
                        ))
                        .first(c)
                        .optional()?;
                    match token {
                        None => Holder::Invalid,
                        Some((_, name, _, Some(at), _)) if at <= now => {
                            Holder::Expired { name, at }
                        }
                        Some((id, _, is_admin, _, last_used)) => {
                            if last_used.is_none_or(|t| now - t >= LAST_USED_RESOLUTION) {
                                diesel::update(api_tokens::table.find(&id))
                                    .set(api_tokens::last_used_at.eq(now))
                                    .execute(c)?;
                            }
                            let groups = groups_of!(c, &email)?;
                            Holder::Valid(
                                User {
                                    email: email.clone(),
                                    is_admin,
                                    groups,
                                },
                                id,
                            )
                        }
                    }
                });
                Ok(found)
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
    ) -> Result<SessionStart, StoreError> {
        let (user, token_id) = match self.holder(email, token).await? {
            Holder::Valid(user, id) => (user, id),
            Holder::Expired { name, at } => return Ok(SessionStart::Expired { name, at }),
            Holder::Invalid => return Ok(SessionStart::Invalid),
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
        Ok(SessionStart::Started {
            user,
            secret,
            expires,
        })
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

    /// Ends a console session (signing out): whose it was, or `None` when it was
    /// already gone (which is no error).
    pub async fn end_session(&self, secret: &str) -> Result<Option<String>, StoreError> {
        let hash = hash_token(secret);
        self.db
            .run(move |conn| {
                Ok(with_backend!(conn, |c| diesel::delete(
                    console_sessions::table.filter(console_sessions::id_hash.eq(&hash))
                )
                .returning(console_sessions::user_email)
                .get_result::<String>(c)
                .optional())?)
            })
            .await
    }
}
