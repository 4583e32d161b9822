//! Bearer tokens: 256 random bits, shown once, stored only as a blake3 hash.
//! The admin token comes from the configuration or `SESAME_ADMIN_TOKEN` and is
//! compared by hash in constant time.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sesame_engine::Actor;
use sesame_store::Role;

use crate::ApiState;
use crate::error::ApiError;

/// A new random token.
pub fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(&e))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("ssm_{hex}"))
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> blake3::Hash {
    blake3::hash(token.as_bytes())
}

/// The token of an `Authorization: Bearer TOKEN` value. The scheme is
/// case-insensitive (RFC 9110, section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(ApiError::unauthorized)?;
        let hash = token_hash(token);
        // blake3::Hash compares in constant time.
        if state.admin_token.as_ref().is_some_and(|admin| *admin == hash) {
            return Ok(Caller(Actor { account: None, handle: "admin".into(), admin: true }));
        }
        match state.project.store.account_by_token(&hash.to_hex()).await? {
            Some(account) => Ok(Caller(Actor {
                account: Some(account.id),
                handle: account.handle,
                admin: account.role == Role::Admin,
            })),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// Only the account itself (or an admin) acts on a site.
pub(crate) fn own_site(actor: &Actor, handle: &str) -> Result<(), ApiError> {
    if actor.admin || actor.handle == handle {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("the site {handle:?} belongs to another account")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", "bEaReR abc"] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearer", "Bearer   ", "Bearerabc", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}
