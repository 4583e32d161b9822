//! Signing up, in and out, and the account's API tokens.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;
use sesame_store::{Credential, Registration, Role};

use super::session::{self, PASSWORD_LENGTH, PRE_SESSION_COOKIE, SESSION_COOKIE};
use super::{Dashboard, Failure, FormPost};
use crate::routes::ClientIp;

type S = State<Arc<Dashboard>>;

/// Tokens an account may hold at once.
const MAX_TOKENS: usize = 20;

impl Dashboard {
    /// The sign-in or sign-up form (`mode`), with an error and what was typed.
    fn sign_in_form(
        &self,
        headers: &HeaderMap,
        mode: &str,
        status: StatusCode,
        errors: serde_json::Value,
        handle: &str,
    ) -> Response {
        let (csrf, cookie) = match self.pre_session(headers) {
            Ok(pair) => pair,
            Err(f) => return f.into_response(),
        };
        let ctx = json!({ "mode": mode, "errors": errors, "handle": handle, "csrf": csrf,
            "min_password": PASSWORD_LENGTH.start() });
        let mut response = self.page(None, "sign_in.html", ctx);
        *response.status_mut() = status;
        if let Some(c) = cookie {
            response.headers_mut().append(header::SET_COOKIE, c);
        }
        response
    }

    /// Signs `account` in: the session cookie, and on to its landing page.
    async fn signed_in(&self, headers: &HeaderMap, account: &sesame_store::Account) -> Response {
        let cookie = match self.start_session(headers, account).await {
            Ok(c) => c,
            Err(f) => return f.into_response(),
        };
        let mut response = Redirect::to(&self.landing(account)).into_response();
        response.headers_mut().append(header::SET_COOKIE, cookie);
        response.headers_mut().append(header::SET_COOKIE, self.set_cookie(headers, PRE_SESSION_COOKIE, "", 0));
        response
    }
}

pub(super) async fn login_page(State(d): S, headers: HeaderMap) -> Response {
    if let Ok(Some(s)) = d.session(&headers).await {
        return Redirect::to(&d.landing(&s.account)).into_response();
    }
    d.sign_in_form(&headers, "login", StatusCode::OK, json!({}), "")
}

pub(super) async fn login(State(d): S, ClientIp(ip): ClientIp, form: FormPost) -> Response {
    if let Err(f) = d.check_pre_session(&form.headers, form.get("csrf")) {
        return f.into_response();
    }
    let handle = form.get("handle").trim().to_ascii_lowercase();
    let headers = &form.headers;
    // Per address and per account: guessing one account's password from many
    // addresses is limited as much as guessing many from one.
    let too_many = |not_until: governor::NotUntil<governor::clock::QuantaInstant>| {
        let (seconds, when) = crate::retry_in(&not_until);
        let message = format!("Too many sign-in attempts. Try again in {when}.");
        let status = StatusCode::TOO_MANY_REQUESTS;
        let mut response = d.sign_in_form(headers, "login", status, json!({"form": message}), &handle);
        response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        response
    };
    if let Some(ip) = ip
        && let Err(not_until) = crate::check_network(&d.logins_by_ip, ip)
    {
        return too_many(not_until);
    }
    let password = form.get("password");
    let found = if sesame_model::slug::validate_handle(&handle).is_ok()
        && PASSWORD_LENGTH.contains(&password.chars().count())
    {
        match d.api.project.store.account_for_login(&handle).await {
            Ok(found) => found,
            Err(e) => return Failure::from(e).into_response(),
        }
    } else {
        None
    };
    if let Some((account, _)) = &found
        && let Err(not_until) = d.logins_by_account.check_key(&account.id.0)
    {
        return too_many(not_until);
    }
    let (account, stored) = match found {
        Some((account, stored)) => (Some(account), stored),
        None => (None, None),
    };
    match session::verify_password(password.to_string(), stored).await {
        Ok(true) => {}
        Ok(false) => {
            let error = json!({"form": "That handle and password do not match an account."});
            return d.sign_in_form(headers, "login", StatusCode::UNAUTHORIZED, error, &handle);
        }
        Err(f) => return f.into_response(),
    }
    let Some(account) = account else { return Failure::internal(&"a password matched no account").into_response() };
    if !d.signup_open() && account.role != Role::Admin {
        let error = json!({"form": "This dashboard is for administrators."});
        return d.sign_in_form(headers, "login", StatusCode::FORBIDDEN, error, &handle);
    }
    d.signed_in(headers, &account).await
}

pub(super) async fn signup_page(State(d): S, headers: HeaderMap) -> Response {
    if !d.signup_open() {
        return Failure::not_found().into_response();
    }
    d.sign_in_form(&headers, "signup", StatusCode::OK, json!({}), "")
}

pub(super) async fn signup(State(d): S, ClientIp(ip): ClientIp, form: FormPost) -> Response {
    if !d.signup_open() {
        return Failure::not_found().into_response();
    }
    if let Err(f) = d.check_pre_session(&form.headers, form.get("csrf")) {
        return f.into_response();
    }
    let headers = &form.headers;
    let handle = form.get("handle").trim().to_ascii_lowercase();
    let password = form.get("password");
    let refuse = |status, errors| d.sign_in_form(headers, "signup", status, errors, &handle);
    if let Err(e) = crate::input::handle(&handle).and_then(|h| d.api.handle_available(h)) {
        return refuse(e.status(), json!({"handle": e.message()}));
    }
    if !PASSWORD_LENGTH.contains(&password.chars().count()) {
        let message = format!("Use between {} and {} characters.", PASSWORD_LENGTH.start(), PASSWORD_LENGTH.end());
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, json!({"password": message}));
    }
    if password.eq_ignore_ascii_case(&handle) {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"password": "Choose a password other than your handle."}),
        );
    }
    if let Err(e) = d.api.charge_signup(ip) {
        let mut response = refuse(e.status(), json!({"form": e.message()}));
        if let Some(seconds) = e.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        return response;
    }
    let hash = match session::hash_password(password.to_string()).await {
        Ok(h) => h,
        Err(f) => return f.into_response(),
    };
    let sites = d.api.project.site.config.api.sites.as_deref();
    let store = &d.api.project.store;
    match store.create_account(&handle, Role::User, Credential::Password(&hash), sites).await {
        Ok(Registration::Created(id)) => {
            let account = sesame_store::Account { id, handle: handle.clone(), role: Role::User };
            d.signed_in(headers, &account).await
        }
        Ok(Registration::Taken) => refuse(StatusCode::CONFLICT, json!({"handle": format!("{handle:?} is taken.")})),
        Ok(Registration::OwnsContent) => refuse(
            StatusCode::CONFLICT,
            json!({"handle": format!("Content already belongs to {handle:?}; ask the operator to hand it over.")}),
        ),
        Err(e) => Failure::from(e).into_response(),
    }
}

pub(super) async fn logout(State(d): S, form: FormPost) -> Response {
    let s = match d.require_form(&form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let store = &d.api.project.store;
    let ended = if form.get("everywhere").is_empty() {
        store.end_session(&s.hash()).await.map(|()| 1)
    } else {
        store.end_sessions(s.account.id).await
    };
    if let Err(e) = ended {
        return Failure::from(e).into_response();
    }
    let mut response = Redirect::to(&format!("{}login", d.path)).into_response();
    response.headers_mut().append(header::SET_COOKIE, d.set_cookie(&form.headers, SESSION_COOKIE, "", 0));
    response
}

#[derive(serde::Deserialize)]
pub(super) struct TokensQuery {
    revoked: Option<u8>,
}

impl Dashboard {
    async fn tokens_view(
        &self,
        s: &session::Session,
        status: StatusCode,
        extra: serde_json::Value,
    ) -> Result<Response, Failure> {
        let tokens: Vec<_> = self
            .api
            .project
            .store
            .tokens(s.account.id)
            .await?
            .into_iter()
            .map(|t| {
                json!({ "hash": t.hash, "id": &t.hash[..12.min(t.hash.len())], "label": t.label,
                    "created": super::edit::when(t.created) })
            })
            .collect();
        let mut ctx = json!({ "tokens": tokens, "max": MAX_TOKENS });
        if let (Some(o), serde_json::Value::Object(e)) = (ctx.as_object_mut(), extra) {
            o.extend(e);
        }
        let mut response = self.page(Some(s), "tokens.html", ctx);
        *response.status_mut() = status;
        Ok(response)
    }
}

pub(super) async fn tokens_page(State(d): S, headers: HeaderMap, Query(q): Query<TokensQuery>) -> Response {
    let s = match d.require(&headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    d.tokens_view(&s, StatusCode::OK, json!({ "revoked": q.revoked.is_some() }))
        .await
        .unwrap_or_else(|f| f.into_response())
}

pub(super) async fn create_token(State(d): S, form: FormPost) -> Response {
    let s = match d.require_form(&form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let label: String = form.get("label").trim().chars().take(60).collect();
        let label = if label.is_empty() { "API token".to_string() } else { label };
        let store = &d.api.project.store;
        if store.tokens(s.account.id).await?.len() >= MAX_TOKENS {
            let error = format!("An account holds at most {MAX_TOKENS} tokens: revoke one first.");
            return d.tokens_view(&s, StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": error })).await;
        }
        let token = crate::new_token()?;
        store.add_token(s.account.id, &crate::token_hash(&token).to_hex(), &label).await?;
        d.tokens_view(&s, StatusCode::CREATED, json!({ "new_token": token, "new_label": label })).await
    }
    .await;
    result.unwrap_or_else(|f| f.into_response())
}

pub(super) async fn revoke_token(State(d): S, form: FormPost) -> Response {
    let s = match d.require_form(&form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match d.api.project.store.revoke_token(s.account.id, form.get("hash")).await {
        Ok(true) => Redirect::to(&format!("{}tokens?revoked=1", d.path)).into_response(),
        Ok(false) => Failure::not_found().into_response(),
        Err(e) => Failure::from(e).into_response(),
    }
}
