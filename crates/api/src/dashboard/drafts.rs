//! The edit page's draft, its schedule and the site's archive: forms that
//! work without the script, each checked like the API's requests.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use sesame_engine::drafts::ScheduleRequest;

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

/// Publishes the site's draft now.
pub(super) async fn publish(State(d): S, Path(handle): Path<String>, form: FormPost) -> Response {
    let s = match d.require_form(&form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let key = d.site_of(&s, &handle)?;
        d.api.charge(&s.actor())?;
        let result = sesame_engine::drafts::publish_draft(&d.api.project, &s.actor(), &key, d.api.debounce()).await?;
        let to = match result.event {
            Some(id) => {
                d.api.accepted();
                format!("{}sites/{handle}?change={id}", d.path)
            }
            None => format!("{}sites/{handle}?unchanged=1", d.path),
        };
        Ok::<_, Failure>(Redirect::to(&to).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Discards the site's draft (with its scheduled publish and links).
pub(super) async fn discard(State(d): S, Path(handle): Path<String>, form: FormPost) -> Response {
    let s = match d.require_form(&form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let key = d.site_of(&s, &handle)?;
        d.api.charge(&s.actor())?;
        sesame_engine::drafts::discard_draft(&d.api.project, &s.actor(), &key).await?;
        Ok::<_, Failure>(Redirect::to(&format!("{}sites/{handle}?discarded=1", d.path)).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Sets the site's schedule: when its draft is published, when it comes off.
pub(super) async fn schedule(State(d): S, Path(handle): Path<String>, form: FormPost) -> Response {
    let s = match d.require_form(&form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let key = d.site_of(&s, &handle)?;
        let request = ScheduleRequest {
            publish_at: form_time("Publish at", form.get("publish_at"))?,
            unpublish_at: form_time("Take off at", form.get("unpublish_at"))?,
        };
        d.api.charge(&s.actor())?;
        sesame_engine::drafts::set_schedule(&d.api.project, &s.actor(), &key, request).await?;
        d.api.publisher.wake();
        Ok::<_, Failure>(Redirect::to(&format!("{}sites/{handle}?scheduled=1", d.path)).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
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
