//! The site's custom domains: attach one, see the DNS records to add and
//! where each stands, check one now or remove it. Forms that work without
//! the script; with it, the statuses follow the background checks.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

use super::{Dashboard, Failure, FormPost};

type S = State<Arc<Dashboard>>;

/// The domains page.
pub(super) async fn page(
    State(d): S,
    Path(handle): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = match d.require(&headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        d.site_of(&s, &handle)?;
        let domains = crate::domains::list(&d.api, &s.actor(), &handle).await?;
        let waiting = domains.iter().any(|d| d.status != "live");
        let done = ["attached", "checked", "removed"].into_iter().find_map(|k| query.get(k).map(|h| (k, h.clone())));
        Ok::<_, Failure>(d.page(
            Some(&s),
            "domains.html",
            json!({ "handle": handle, "domains": domains, "waiting": waiting,
                "done": done.map(|(what, host)| json!({ "what": what, "host": host })) }),
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A domains form's post as the session that sent it (its token checked):
/// `act` on the host it names, then back to the page saying what was done.
async fn post<F, Fut>(d: &Dashboard, handle: &str, form: &FormPost, done: &str, act: F) -> Response
where
    F: FnOnce(sesame_engine::Actor, String) -> Fut,
    Fut: std::future::Future<Output = Result<String, crate::error::ApiError>>,
{
    let s = match d.require_form(form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        d.site_of(&s, handle)?;
        let host = act(s.actor(), form.get("host").to_string()).await?;
        let back = format!("{}sites/{handle}/domains?{done}={}", d.path, urlencoding(&host));
        Ok::<_, Failure>(Redirect::to(&back).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

fn urlencoding(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Attaches the host typed in the form.
pub(super) async fn attach(State(d): S, Path(handle): Path<String>, form: FormPost) -> Response {
    let (d, h) = (&*d, handle.as_str());
    post(d, h, &form, "attached", |actor, host| async move {
        Ok(crate::domains::attach(&d.api, &actor, h, &host).await?.host)
    })
    .await
}

/// Checks a host's DNS now.
pub(super) async fn check(State(d): S, Path(handle): Path<String>, form: FormPost) -> Response {
    let (d, h) = (&*d, handle.as_str());
    post(d, h, &form, "checked", |actor, host| async move {
        crate::domains::check(&d.api, &actor, h, &host).await?;
        Ok(host)
    })
    .await
}

/// Removes a host from the site.
pub(super) async fn remove(State(d): S, Path(handle): Path<String>, form: FormPost) -> Response {
    let (d, h) = (&*d, handle.as_str());
    post(d, h, &form, "removed", |actor, host| async move {
        crate::domains::detach(&d.api, &actor, h, &host).await?;
        Ok(host)
    })
    .await
}
