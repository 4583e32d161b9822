//! Who is signed in: passwords (Argon2id), session cookies (stored as
//! hashes, revocable) and the CSRF token of every form.
//!
//! The session cookie is 256 random bits; the server keeps only its blake3
//! hash, so a copy of the database signs nobody in. A form's CSRF token is
//! the session value's keyed hash: it changes with every session and needs
//! no storage. Before sign-in, the same is done with a `sesame_csrf` cookie
//! of its own (against login CSRF).

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::{HeaderMap, HeaderValue, header};
use sesame_engine::Actor;
use sesame_store::{Account, Role};

use super::{Dashboard, Failure};

/// The session cookie.
pub(super) const SESSION_COOKIE: &str = "sesame_session";
/// The cookie that keys the CSRF token of the sign-in and sign-up forms.
pub(super) const PRE_SESSION_COOKIE: &str = "sesame_csrf";
/// Passwords: long enough to resist guessing, short enough to hash cheaply.
pub(crate) const PASSWORD_LENGTH: std::ops::RangeInclusive<usize> = 8..=256;

/// A signed-in person.
#[derive(Debug, Clone)]
pub(super) struct Session {
    /// The session cookie's value (keys its CSRF token).
    value: [u8; 32],
    pub account: Account,
}

impl Session {
    /// The account as the engine sees a writer.
    pub fn actor(&self) -> Actor {
        Actor {
            account: Some(self.account.id),
            handle: self.account.handle.clone(),
            admin: self.account.role == Role::Admin,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.account.role == Role::Admin
    }

    /// The token every form of this session carries.
    pub fn csrf(&self) -> String {
        csrf_token(&self.value)
    }

    /// The stored form of the session cookie.
    pub fn hash(&self) -> String {
        blake3::hash(&self.value).to_hex().to_string()
    }
}

fn csrf_token(key: &[u8; 32]) -> String {
    blake3::keyed_hash(key, b"sesame dashboard form").to_hex().to_string()
}

/// 256 random bits.
pub(super) fn random() -> Result<[u8; 32], Failure> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Failure::internal(&e))?;
    Ok(bytes)
}

fn hex(bytes: &[u8; 32]) -> String {
    blake3::Hash::from_bytes(*bytes).to_hex().to_string()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    blake3::Hash::from_hex(text).ok().map(|h| *h.as_bytes())
}

/// The value of a cookie of the request.
pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

impl Dashboard {
    /// Whether cookies must be `Secure`: the site is served over HTTPS, or
    /// the proxy in front says this request came over it.
    fn secure(&self, headers: &HeaderMap) -> bool {
        self.api.project.site.config.base_url.starts_with("https://")
            || headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
    }

    /// A `Set-Cookie` value scoped to the dashboard.
    pub(super) fn set_cookie(&self, headers: &HeaderMap, name: &str, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure(headers) { "; Secure" } else { "" };
        let cookie = format!("{name}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}", self.path);
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The session of the request, if it is signed in.
    pub(super) async fn session(&self, headers: &HeaderMap) -> Result<Option<Session>, Failure> {
        let Some(value) = cookie(headers, SESSION_COOKIE).and_then(unhex) else { return Ok(None) };
        let hash = blake3::hash(&value).to_hex().to_string();
        let account = self.api.project.store.session_account(&hash).await.map_err(Failure::from)?;
        Ok(account.map(|account| Session { value, account }))
    }

    /// Starts a session for `account`: its cookie.
    pub(super) async fn start_session(&self, headers: &HeaderMap, account: &Account) -> Result<HeaderValue, Failure> {
        let value = random()?;
        let seconds = u64::from(self.config().session_hours) * 3600;
        let expires = sesame_model::time::now() + seconds as i64;
        let hash = blake3::hash(&value).to_hex().to_string();
        self.api.project.store.start_session(&hash, account.id, expires).await.map_err(Failure::from)?;
        Ok(self.set_cookie(headers, SESSION_COOKIE, &hex(&value), seconds))
    }

    /// The CSRF token for the sign-in forms, and the cookie that keys it
    /// when the browser has none yet.
    pub(super) fn pre_session(&self, headers: &HeaderMap) -> Result<(String, Option<HeaderValue>), Failure> {
        if let Some(key) = cookie(headers, PRE_SESSION_COOKIE).and_then(unhex) {
            return Ok((csrf_token(&key), None));
        }
        let key = random()?;
        Ok((csrf_token(&key), Some(self.set_cookie(headers, PRE_SESSION_COOKIE, &hex(&key), 24 * 3600))))
    }

    /// Checks the token of a sign-in form against the request's cookie.
    pub(super) fn check_pre_session(&self, headers: &HeaderMap, token: &str) -> Result<(), Failure> {
        let key = cookie(headers, PRE_SESSION_COOKIE).and_then(unhex).ok_or_else(Failure::csrf)?;
        check_csrf(&csrf_token(&key), token)
    }
}

/// Compares a submitted CSRF token in constant time.
pub(super) fn check_csrf(expected: &str, submitted: &str) -> Result<(), Failure> {
    let (Ok(expected), Ok(submitted)) = (blake3::Hash::from_hex(expected), blake3::Hash::from_hex(submitted)) else {
        return Err(Failure::csrf());
    };
    // blake3::Hash compares in constant time.
    if expected == submitted { Ok(()) } else { Err(Failure::csrf()) }
}

/// Password hashes computed at once, at most: each takes 19 MiB and a core
/// for tens of milliseconds, so a flood of sign-ins (from addresses the
/// rate limits have not seen yet) queues here instead of exhausting memory.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Hashes a password with Argon2id (the crate's defaults: 19 MiB, 2 passes),
/// off the async threads.
pub(crate) async fn hash_password(password: String) -> Result<String, Failure> {
    let _turn = HASHING.acquire().await.map_err(|e| Failure::internal(&e))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&random()?[..16]).map_err(|e| Failure::internal(&e))?;
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Failure::internal(&e))
    })
    .await
    .map_err(|e| Failure::internal(&e))?
}

/// A hash to verify against when the account does not exist or has no
/// password, so that the answer takes as long either way.
static DECOY: LazyLock<String> = LazyLock::new(|| {
    SaltString::encode_b64(b"sesame decoy salt")
        .ok()
        .and_then(|salt| argon2::Argon2::default().hash_password(b"decoy", &salt).ok().map(|h| h.to_string()))
        .unwrap_or_default()
});

/// Whether `password` matches the stored hash (None: verify a decoy and fail).
pub(super) async fn verify_password(password: String, stored: Option<String>) -> Result<bool, Failure> {
    let _turn = HASHING.acquire().await.map_err(|e| Failure::internal(&e))?;
    tokio::task::spawn_blocking(move || {
        let (hash, real) = match stored {
            Some(h) => (h, true),
            None => (DECOY.clone(), false),
        };
        let Ok(parsed) = PasswordHash::new(&hash) else { return false };
        argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && real
    })
    .await
    .map_err(|e| Failure::internal(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_are_argon2id_and_verify() {
        let hash = hash_password("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse".into(), Some(hash.clone())).await.expect("verify"));
        assert!(!verify_password("wrong horse".into(), Some(hash)).await.expect("verify"));
        assert!(!verify_password("decoy".into(), None).await.expect("verify"), "no account, no sign-in");
    }

    #[tokio::test]
    async fn password_hashing_waits_for_a_turn() {
        let all = HASHING.acquire_many(4).await.expect("permits");
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), verify_password("x".into(), None));
        assert!(waited.await.is_err(), "with every turn taken, no hash is computed");
        drop(all);
        assert!(!verify_password("x".into(), None).await.expect("verify"));
    }

    #[test]
    fn csrf_tokens_are_compared_whole() {
        let token = csrf_token(&[7; 32]);
        assert!(check_csrf(&token, &token).is_ok());
        assert!(check_csrf(&token, &csrf_token(&[8; 32])).is_err());
        assert!(check_csrf(&token, "").is_err());
        assert!(check_csrf(&token, &token[..32]).is_err());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; sesame_session=abc"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, "sesame_session"), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "sesame"), None);
    }
}
