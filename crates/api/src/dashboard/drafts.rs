//! The edit page's draft, its schedule and the site's archive: forms that
//! work without the script, each checked like the API's requests.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use sesame_engine::Actor;
use sesame_engine::drafts::ScheduleRequest;
use sesame_model::DocKey;

use super::{Dashboard, Failure, FormPost};

type S = State<Arc<Dashboard>>;

/// A time from the schedule form: RFC 3339, or a `datetime-local` value
/// (`2027-01-31T09:00`), read as UTC. Empty: none.
fn form_time(label: &str, text: &str) -> Result<Option<i64>, Failure> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let parse = sesame_model::time::parse_rfc3339_ms;
    parse(text)
        .or_else(|| parse(&format!("{text}:00Z")))
        .or_else(|| parse(&format!("{text}Z")))
        .map(Some)
        .ok_or_else(|| Failure::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{label}: give a date and time (UTC).")))
}

/// A site's form post as the session that sent it (its token checked), on
/// a site it may edit, charged as a write; then `act` on it, whose answer
/// (or refusal) is the response.
async fn site_post<F, Fut>(d: &Dashboard, handle: &str, form: &FormPost, act: F) -> Response
where
    F: FnOnce(Actor, DocKey) -> Fut,
    Fut: std::future::Future<Output = Result<Response, Failure>>,
{
    let s = match d.require_form(form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let key = d.site_of(&s, handle)?;
        d.api.charge(&s.actor())?;
        act(s.actor(), key).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Publishes the site's draft now.
pub(super) async fn publish(State(d): S, Path(handle): Path<String>, form: FormPost) -> Response {
    let (d, handle, form) = (&*d, handle.as_str(), &form);
    site_post(d, handle, form, |actor, key| async move {
        let result = sesame_engine::drafts::publish_draft(&d.api.project, &actor, &key, d.api.debounce()).await?;
        Ok(d.followed(handle, result.event, ""))
    })
    .await
}

/// Discards the site's draft (with its scheduled publish and links).
pub(super) async fn discard(State(d): S, Path(handle): Path<String>, form: FormPost) -> Response {
    let (d, handle, form) = (&*d, handle.as_str(), &form);
    site_post(d, handle, form, |actor, key| async move {
        sesame_engine::drafts::discard_draft(&d.api.project, &actor, &key).await?;
        Ok(Redirect::to(&format!("{}sites/{handle}?discarded=1", d.path)).into_response())
    })
    .await
}

/// Sets the site's schedule: when its draft is published, when it comes off.
pub(super) async fn schedule(State(d): S, Path(handle): Path<String>, form: FormPost) -> Response {
    let (d, handle, form) = (&*d, handle.as_str(), &form);
    site_post(d, handle, form, |actor, key| async move {
        let request = ScheduleRequest {
            publish_at: form_time("Publish at", form.get("publish_at"))?,
            unpublish_at: form_time("Take off at", form.get("unpublish_at"))?,
        };
        sesame_engine::drafts::set_schedule(&d.api.project, &actor, &key, request).await?;
        d.api.publisher.wake();
        Ok(Redirect::to(&format!("{}sites/{handle}?scheduled=1", d.path)).into_response())
    })
    .await
}

/// The site as one `tar.gz` (the API's export, signed in by the session).
pub(super) async fn export(State(d): S, Path(handle): Path<String>, headers: HeaderMap) -> Response {
    let s = match d.require(&headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        d.site_of(&s, &handle)?;
        Ok::<_, Failure>(crate::drafts::archive_response(&d.api, &s.actor(), &handle).await?)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
