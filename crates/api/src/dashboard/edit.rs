//! Editing a site: the form, its live preview, image uploads, the progress
//! of a save, the history of published versions and rollback.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Map, Value, json};
use sesame_engine::{WriteError, WriteResult};
use sesame_model::{DocKey, Fields, Op, Status};

use super::form::{Form, ListEdit, Row, Submitted};
use super::session::{self, Session};
use super::{Dashboard, Failure, FormPost};
use crate::auth::own_site;
use crate::error::ApiError;
use crate::input::site_key;

type S = State<Arc<Dashboard>>;

/// Inputs a form may have (bounds the work of reading one).
const MAX_INPUTS: usize = 2000;

/// A time for people: `2026-12-02 22:17 UTC`.
pub(super) fn when(secs: i64) -> String {
    let t = sesame_model::time::rfc3339(secs);
    format!("{} UTC", t.get(..16).unwrap_or(&t).replace('T', " "))
}

/// What a page says after an action.
#[derive(Default)]
struct Notice {
    message: Option<String>,
    error: Option<String>,
}

/// The edit page, rendered when answered (with the draft's state, when known).
pub(super) struct EditView<'a> {
    dashboard: &'a Dashboard,
    session: &'a Session,
    ctx: Value,
    status: StatusCode,
}

impl EditView<'_> {
    /// Shows the site's draft (when saved) and its schedule.
    fn with_draft(mut self, state: &sesame_engine::drafts::DraftState) -> Self {
        let time = |ms: i64| when(ms.div_euclid(1000));
        let mut schedule = json!({});
        for s in &state.schedules {
            // `datetime-local` values, in UTC, for the form.
            let local = sesame_model::time::rfc3339(s.due.div_euclid(1000)).get(..16).unwrap_or_default().to_string();
            schedule[s.action.as_str()] = json!({ "when": time(s.due), "value": local, "error": s.error });
        }
        self.ctx["draft"] = json!(state.draft.as_ref().map(|d| json!({ "updated": time(d.updated) })));
        self.ctx["schedule"] = schedule;
        self
    }
}

impl IntoResponse for EditView<'_> {
    fn into_response(self) -> Response {
        let mut response = self.dashboard.page(Some(self.session), "edit.html", self.ctx);
        *response.status_mut() = self.status;
        response
    }
}

impl Dashboard {
    /// The edit form of a collection, from its schema (a collection without
    /// one is edited field by field as JSON).
    fn with_form<T>(&self, collection: &str, data: &Map<String, Value>, f: impl FnOnce(&Form<'_>) -> T) -> T {
        let site = &self.api.project.site;
        let c = site.collection(collection);
        let hidden: Vec<&str> = c.owner.as_deref().into_iter().collect();
        match site.schema(collection) {
            Some(schema) => f(&Form::new(schema, &c.markdown, hidden, c.title.as_deref())),
            None => {
                let properties: Map<String, Value> = data.keys().map(|k| (k.clone(), json!({}))).collect();
                let schema = json!({ "type": "object", "properties": properties });
                f(&Form::new(&schema, &c.markdown, hidden, c.title.as_deref()))
            }
        }
    }

    /// The site of `handle`, if `s` may edit it (its own, or any for admins).
    pub(super) fn site_of(&self, s: &Session, handle: &str) -> Result<DocKey, Failure> {
        let key = site_key(&self.api, handle)?;
        own_site(&s.actor(), handle)?;
        Ok(key)
    }

    /// Where the document's own pages are (site-relative).
    fn public_paths(&self, data: &Map<String, Value>, key: &DocKey, owner: &str) -> Vec<String> {
        let doc = sesame_model::Document {
            key: key.clone(),
            owner: Some(owner.into()),
            created: 0,
            updated: 0,
            status: Status::Live,
            flags: Vec::new(),
            data: Fields::new(data),
            media: Default::default(),
            domain: None,
        };
        self.api.project.site.doc_paths(&doc)
    }

    /// The edit page showing `data`, with `errors` beside their fields.
    #[allow(clippy::too_many_arguments)]
    fn edit_view<'a>(
        &'a self,
        s: &'a Session,
        handle: &str,
        key: &DocKey,
        data: &Map<String, Value>,
        errors: &BTreeMap<String, String>,
        notice: Notice,
        change: Option<Value>,
        status: StatusCode,
    ) -> EditView<'a> {
        let rows: Vec<Row> = self.with_form(&key.collection, data, |form| form.rows(data, errors));
        // Every error, also those no input shows, in a summary at the top.
        let summary: Vec<Value> = errors
            .iter()
            .map(|(pointer, message)| {
                let shown = rows.iter().any(|r| &r.name == pointer && r.error.is_some());
                let label = if pointer.is_empty() { "The page".to_string() } else { pointer.clone() };
                json!({ "label": label, "message": message,
                    "anchor": shown.then(|| format!("f{}", pointer.replace('/', "-"))) })
            })
            .collect();
        let pending = change.as_ref().is_some_and(|c| matches!(c["status"].as_str(), Some("queued" | "building")));
        let ctx = json!({
            "handle": handle,
            "rows": rows,
            "summary": summary,
            "message": notice.message,
            "error": notice.error,
            "change": change,
            "refresh": pending,
            // Where it is (or will be) published, once there is something to show.
            "public": (!data.is_empty()).then(|| self.public_paths(data, key, handle).into_iter().next()).flatten(),
            // Custom domains, where the platform has them set up.
            "domains": self.api.project.site.config.domains.enabled(),
            // Filled in by `EditView::with_draft` where the page shows them.
            "draft": null,
            "schedule": {},
        });
        EditView { dashboard: self, session: s, ctx, status }
    }

    /// The edit page following change `event` (with `also` in its query),
    /// or saying nothing changed.
    pub(super) fn followed(&self, handle: &str, event: Option<i64>, also: &str) -> Response {
        let to = match event {
            Some(id) => {
                self.api.accepted();
                format!("{}sites/{handle}?change={id}{also}", self.path)
            }
            None => format!("{}sites/{handle}?unchanged=1", self.path),
        };
        Redirect::to(&to).into_response()
    }

    /// A change's progress as the edit page and the script show it.
    async fn progress(&self, s: &Session, id: i64) -> Result<Value, ApiError> {
        let out = crate::routes::change_status(&self.api, &s.actor(), id).await?;
        let status = serde_json::to_value(&out).unwrap_or_default();
        Ok(json!({ "id": id, "status": status["status"], "error": status["error"], "paths": out.paths }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_versions_changes_are_its_fields_that_differ_from_now() {
        let now = json!({"name": "Ann", "links": [{"url": "https://a.example"}], "a/b": 1});
        let then = json!({"name": "Ann, before", "links": [], "bio": "hi"});
        let changes = field_changes(&now, &then);
        let fields: Vec<&str> = changes.iter().map(|c| c["field"].as_str().unwrap_or_default()).collect();
        assert_eq!(fields, ["/a~1b", "/bio", "/links/0", "/name"]);
        assert_eq!(changes[3], json!({"field": "/name", "now": "Ann", "then": "Ann, before"}));
        assert_eq!(changes[1]["now"], Value::Null, "absent now");
        let long = json!({"name": "x".repeat(200)});
        assert_eq!(field_changes(&long, &json!({}))[0]["now"].as_str().map(|s| s.chars().count()), Some(81));
    }
}

#[derive(serde::Deserialize)]
pub(super) struct EditQuery {
    change: Option<i64>,
    unchanged: Option<u8>,
    rolled_back: Option<u64>,
    drafted: Option<u8>,
    discarded: Option<u8>,
    scheduled: Option<u8>,
}

pub(super) async fn edit_page(
    State(d): S,
    Path(handle): Path<String>,
    headers: HeaderMap,
    Query(q): Query<EditQuery>,
) -> Response {
    let s = match d.require(&headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let key = d.site_of(&s, &handle)?;
        let doc = sesame_engine::read(&d.api.project, &s.actor(), &key).await?;
        // A saved draft is what the form edits.
        let drafted = sesame_engine::drafts::draft_state(&d.api.project, &s.actor(), &key).await?;
        let data = match &drafted.draft {
            Some(draft) => draft.data.clone(),
            None => doc.map(|doc| doc.data.to_map()).unwrap_or_default(),
        };
        let change = match q.change {
            Some(id) => Some(d.progress(&s, id).await?),
            None => None,
        };
        let message = match (&q.rolled_back, &q.unchanged) {
            (Some(g), _) => Some(format!("Rolling back to version {g}.")),
            (None, Some(_)) => Some("Nothing changed.".to_string()),
            _ if q.drafted.is_some() => Some("Draft saved. It is not on your site until you publish it.".into()),
            _ if q.discarded.is_some() => Some("Draft discarded.".into()),
            _ if q.scheduled.is_some() => Some("Schedule saved.".into()),
            (None, None) if data.is_empty() => {
                Some("Your site is not published yet: fill in the form and save.".into())
            }
            _ => None,
        };
        let notice = Notice { message, error: None };
        let view = d.edit_view(&s, &handle, &key, &data, &BTreeMap::new(), notice, change, StatusCode::OK);
        Ok::<_, Failure>(view.with_draft(&drafted).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A submitted edit form: its inputs and the images chosen in it.
struct Draft {
    form: Submitted,
    files: Vec<(String, Bytes)>,
}

/// Reads an edit form (multipart, as the page sends it, or urlencoded).
/// A body over the limit is read on and dropped (within bounds) before the
/// 413, so the browser shows the answer rather than a reset connection.
async fn read_draft(d: &Dashboard, request: Request) -> Result<Draft, Failure> {
    let config = &d.api.project.site.config;
    let limit = config.media.max_bytes + config.api.max_body_bytes + 64 * 1024;
    let too_large = || {
        let mb = config.media.max_bytes.div_ceil(1 << 20);
        Failure::new(StatusCode::PAYLOAD_TOO_LARGE, format!("The form is too large: images may have up to {mb} MB."))
    };
    let length = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if length.is_some_and(|n| n > limit) {
        crate::drafts::read_upload(request.into_body(), 0).await;
        return Err(too_large());
    }
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("multipart/form-data"));
    let mut draft = Draft { form: Submitted::default(), files: Vec::new() };
    if !multipart {
        let bytes = Bytes::from_request(request, &()).await.map_err(|_| too_large())?;
        draft.form.values = super::form_pairs(&bytes).into_iter().collect();
        return Ok(draft);
    }
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            Failure::new(StatusCode::BAD_REQUEST, "The form could not be read; reload the page and try again.")
        }
    };
    let mut form = Multipart::from_request(request, &()).await.map_err(|_| {
        Failure::new(StatusCode::BAD_REQUEST, "The form could not be read; reload the page and try again.")
    })?;
    let mut inputs = 0;
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        inputs += 1;
        if inputs > MAX_INPUTS {
            return Err(Failure::new(StatusCode::PAYLOAD_TOO_LARGE, "The form has too many fields."));
        }
        let name = field.name().unwrap_or_default().to_string();
        if let Some(pointer) = name.strip_prefix("file:") {
            let pointer = pointer.to_string();
            let bytes = field.bytes().await.map_err(unreadable)?;
            if !bytes.is_empty() {
                draft.files.push((pointer, bytes));
            }
        } else {
            let text = field.text().await.map_err(unreadable)?;
            draft.form.values.insert(name, text);
        }
    }
    Ok(draft)
}

/// What saving and previewing both start with: the session, the site it may
/// edit, and the submitted form with a matching token.
async fn open_draft(d: &Dashboard, handle: &str, request: Request) -> Result<(Session, DocKey, Draft), Response> {
    let s = d.require(request.headers()).await?;
    let opened = async {
        let key = d.site_of(&s, handle)?;
        let draft = read_draft(d, request).await?;
        session::check_csrf(&s.csrf(), draft.form.get("csrf").unwrap_or_default())?;
        Ok::<_, Failure>((key, draft))
    };
    let (key, draft) = opened.await.map_err(IntoResponse::into_response)?;
    Ok((s, key, draft))
}

/// Sets the field at `pointer` (its parent must exist).
fn set_field(fields: &mut Map<String, Value>, pointer: &str, value: Value) {
    let mut root = Value::Object(std::mem::take(fields));
    if let Some((parent, name)) = pointer.rsplit_once('/') {
        match root.pointer_mut(parent) {
            Some(Value::Object(o)) => {
                o.insert(name.replace("~1", "/").replace("~0", "~"), value);
            }
            Some(Value::Array(a)) => {
                if let Some(slot) = name.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    *slot = value;
                }
            }
            _ => {}
        }
    }
    if let Value::Object(o) = root {
        *fields = o;
    }
}

pub(super) async fn save(State(d): S, Path(handle): Path<String>, request: Request) -> Response {
    let (s, key, draft) = match open_draft(&d, &handle, request).await {
        Ok(opened) => opened,
        Err(r) => return r,
    };
    let result = async {
        let action = draft.form.get("_action").unwrap_or("save");
        let view = |fields: &Map<String, Value>, errors: &BTreeMap<String, String>, notice, status| {
            d.edit_view(&s, &handle, &key, fields, errors, notice, None, status).into_response()
        };
        if let Some(edit) = ListEdit::parse(action) {
            let (mut fields, errors) = d.with_form(&key.collection, &Map::new(), |f| {
                let (mut fields, errors) = f.parse(&draft.form, true);
                edit.apply(f, &mut fields);
                (fields, errors)
            });
            fields.retain(|_, v| !v.is_null());
            let notice = Notice { message: Some("Not saved yet: save to publish.".into()), error: None };
            return Ok(view(&fields, &errors, notice, StatusCode::OK));
        }
        let (mut fields, mut errors) = d.with_form(&key.collection, &Map::new(), |f| f.parse(&draft.form, false));
        // Images chosen without the script are uploaded with the save.
        for (pointer, bytes) in draft.files {
            let stored = async {
                d.api.charge_upload(&s.actor())?;
                crate::drafts::store_upload(&d.api, &s.actor(), bytes).await
            }
            .await;
            match stored {
                Ok(up) => set_field(&mut fields, &pointer, Value::String(up.reference.clone())),
                Err(e) => {
                    errors.insert(pointer, e.message().to_string());
                }
            }
        }
        if !errors.is_empty() {
            let notice = Notice { error: Some("Not saved: see the fields marked below.".into()), message: None };
            return Ok(view(&fields, &errors, notice, StatusCode::UNPROCESSABLE_ENTITY));
        }
        if let Err(e) = d.api.charge(&s.actor()) {
            let notice = Notice { error: Some(format!("Not saved: {}.", e.message())), message: None };
            let mut response = view(&fields, &errors, notice, StatusCode::TOO_MANY_REQUESTS);
            if let Some(seconds) = e.retry_after() {
                response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
            }
            return Ok(response);
        }
        let refused = |errors: Vec<sesame_site::FieldError>| {
            let errors = errors.into_iter().map(|e| (e.field, e.message)).collect();
            let notice = Notice { error: Some("Not saved: see the fields marked below.".into()), message: None };
            Ok(view(&fields, &errors, notice, StatusCode::UNPROCESSABLE_ENTITY))
        };
        if action == "draft" {
            return match sesame_engine::drafts::save_draft(&d.api.project, &s.actor(), &key, Op::Put(fields.clone()))
                .await
            {
                Ok(_) => Ok(Redirect::to(&format!("{}sites/{handle}?drafted=1", d.path)).into_response()),
                Err(WriteError::Invalid { errors }) => refused(errors),
                Err(e) => Err(Failure::from(e)),
            };
        }
        let written =
            sesame_engine::write(&d.api.project, &s.actor(), &key, Op::Put(fields.clone()), d.api.debounce()).await;
        if written.is_ok() {
            // What the form showed was the draft: published, it is done.
            sesame_engine::drafts::discard_draft(&d.api.project, &s.actor(), &key).await?;
        }
        match written {
            Ok(WriteResult { event: Some(id), .. }) => {
                d.api.accepted();
                Ok(Redirect::to(&format!("{}sites/{handle}?change={id}", d.path)).into_response())
            }
            Ok(WriteResult { event: None, .. }) => {
                Ok(Redirect::to(&format!("{}sites/{handle}?unchanged=1", d.path)).into_response())
            }
            Err(WriteError::Invalid { errors }) => refused(errors),
            Err(e) => Err(Failure::from(e)),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The page as the draft would publish it, for the preview frame.
pub(super) async fn preview(State(d): S, Path(handle): Path<String>, request: Request) -> Response {
    let (s, key, draft) = match open_draft(&d, &handle, request).await {
        Ok(opened) => opened,
        Err(r) => return r,
    };
    let result = async {
        let problems = |status: StatusCode, list: Vec<(String, String)>| {
            let list: Vec<Value> = list.into_iter().map(|(f, m)| json!({ "field": f, "message": m })).collect();
            let mut r = super::render("preview_errors.html", &json!({ "problems": list, "base": d.path }));
            *r.status_mut() = status;
            r
        };
        let (fields, errors) = d.with_form(&key.collection, &Map::new(), |f| f.parse(&draft.form, false));
        if let Err(e) = d.api.charge_preview(&s.actor(), &fields) {
            return Ok(problems(e.status(), vec![(String::new(), e.message().to_string())]));
        }
        if !errors.is_empty() {
            return Ok(problems(StatusCode::UNPROCESSABLE_ENTITY, errors.into_iter().collect()));
        }
        match sesame_engine::preview(&d.api.project, &s.actor(), &key, Op::Put(fields)).await {
            Ok(page) => Ok(crate::drafts::html(page)),
            Err(e) => {
                let e = ApiError::from(e);
                if e.status() == StatusCode::UNPROCESSABLE_ENTITY {
                    let mut list = e.fields_named();
                    if list.is_empty() {
                        list.push((String::new(), e.message().to_string()));
                    }
                    Ok(problems(StatusCode::UNPROCESSABLE_ENTITY, list))
                } else {
                    Err(Failure::from(e))
                }
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// An image upload from the page's script: the body is the file itself,
/// the form token comes in `X-CSRF-Token`. Answers JSON, as `/api/media`.
pub(super) async fn upload(State(d): S, request: Request) -> Response {
    let result = async {
        let s = d.script_session(request.headers()).await?;
        let token = request.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
        session::check_csrf(&s.csrf(), token).map_err(|f| ApiError::new(f.status, f.message))?;
        d.api.charge_upload(&s.actor())?;
        let limit = d.api.project.site.config.media.max_bytes;
        let bytes = crate::drafts::read_upload(request.into_body(), limit).await.ok_or_else(|| {
            let mb = limit.div_ceil(1 << 20);
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the image is too large (at most {mb} MB)"))
                .field("file")
        })?;
        crate::drafts::store_upload(&d.api, &s.actor(), bytes).await
    }
    .await;
    match result {
        Ok(up) => (StatusCode::CREATED, Json(up)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A change's progress, for the script that polls it.
pub(super) async fn change(State(d): S, Path(id): Path<i64>, headers: HeaderMap) -> Response {
    let result = async {
        let s = d.script_session(&headers).await?;
        d.progress(&s, id).await
    }
    .await;
    match result {
        Ok(progress) => Json(progress).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn history(State(d): S, Path(handle): Path<String>, headers: HeaderMap) -> Response {
    let s = match d.require(&headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let key = d.site_of(&s, &handle)?;
        let versions = d.api.project.store.versions(&key, 200).await?;
        let site = &d.api.project.site;
        let versioned = site.config.serve.versioned_urls;
        let rows: Vec<Value> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let state = match &v.doc {
                    None => "deleted",
                    Some(doc) if doc.status == Status::Removed => "taken down",
                    Some(_) => "live",
                };
                let view = v
                    .doc
                    .as_ref()
                    .filter(|doc| versioned && doc.status == Status::Live)
                    .and_then(|doc| site.doc_paths(doc).into_iter().next())
                    .map(|p| format!("{p}?v={}", v.generation));
                // What rolling back to it brings back: its fields that differ from now.
                let data = |doc: Option<&sesame_model::Document>| doc.map(|d| Value::Object(d.data.to_map()));
                let now = data(versions.first().and_then(|c| c.doc.as_ref())).unwrap_or(Value::Null);
                let then = data(v.doc.as_ref()).unwrap_or(Value::Null);
                let changes: Vec<Value> = if i == 0 { Vec::new() } else { field_changes(&now, &then) };
                json!({ "generation": v.generation, "when": when(v.created), "state": state,
                    "title": v.doc.as_ref().map(|doc| site.title(doc)), "view": view, "current": i == 0,
                    "changes": changes })
            })
            .collect();
        Ok::<_, Failure>(d.page(Some(&s), "history.html", json!({ "handle": handle, "versions": rows })))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Fields shown per version in the history, at most.
const MAX_CHANGES: usize = 50;

/// The fields that differ between `now` and `then`, by JSON pointer, with
/// their value in each (`null`: absent), shortened for reading.
fn field_changes(now: &Value, then: &Value) -> Vec<Value> {
    fn walk(now: Option<&Value>, then: Option<&Value>, at: &str, out: &mut Vec<Value>) {
        if out.len() >= MAX_CHANGES || now == then {
            return;
        }
        match (now, then) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    let escaped = k.replace('~', "~0").replace('/', "~1");
                    walk(a.get(k), b.get(k), &format!("{at}/{escaped}"), out);
                }
            }
            (Some(Value::Array(a)), Some(Value::Array(b))) => {
                for i in 0..a.len().max(b.len()) {
                    walk(a.get(i), b.get(i), &format!("{at}/{i}"), out);
                }
            }
            _ => out.push(json!({ "field": at, "now": shown(now), "then": shown(then) })),
        }
    }
    fn shown(value: Option<&Value>) -> Option<String> {
        let text = match value? {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Some(match text.char_indices().nth(80) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text,
        })
    }
    let mut out = Vec::new();
    walk(Some(now), Some(then), "", &mut out);
    out
}

pub(super) async fn rollback(State(d): S, Path(handle): Path<String>, form: FormPost) -> Response {
    let s = match d.require_form(&form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let key = d.site_of(&s, &handle)?;
        let generation: u64 = form
            .get("generation")
            .parse()
            .map_err(|_| Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "Choose a version from the list."))?;
        d.api.charge(&s.actor())?;
        let event = sesame_engine::rollback(&d.api.project, &s.actor(), &key, generation).await?;
        Ok::<_, Failure>(d.followed(&handle, event, &format!("&rolled_back={generation}")))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
