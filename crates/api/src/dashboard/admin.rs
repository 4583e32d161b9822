//! The admin console: find documents, take them down, restore and flag
//! them, one or many at a time; the queue, failed changes and the latest
//! generations.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};
use sesame_model::{FLAG_ADULT, Op, Status};
use sesame_store::Debounce;

use super::edit::when;
use super::session;
use super::{Dashboard, Failure, FormPost};

type S = State<Arc<Dashboard>>;

/// Documents listed, and acted on, at once.
const PAGE: u32 = 100;

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ConsoleQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    collection: String,
    done: Option<usize>,
    unchanged: Option<usize>,
}

fn admins_only(s: &session::Session) -> Result<(), Failure> {
    if s.is_admin() { Ok(()) } else { Err(Failure::new(StatusCode::FORBIDDEN, "The console is for administrators.")) }
}

pub(super) async fn console(State(d): S, headers: HeaderMap, Query(q): Query<ConsoleQuery>) -> Response {
    let s = match d.require(&headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        admins_only(&s)?;
        let project = &d.api.project;
        let site = &project.site;
        let query: String = q.q.trim().chars().take(200).collect();
        let collection = Some(q.collection.as_str()).filter(|c| site.config.collections.contains_key(*c));
        let docs = project.store.find_documents(collection, &query, PAGE).await?;
        let docs: Vec<Value> = docs
            .iter()
            .map(|doc| {
                json!({ "key": doc.key.to_string(), "collection": doc.key.collection, "id": doc.key.id,
                    "owner": doc.owner, "title": site.title(doc), "removed": doc.status == Status::Removed,
                    "flags": doc.flags, "updated": when(doc.updated),
                    "path": site.doc_paths(doc).into_iter().next() })
            })
            .collect();
        let failed: Vec<Value> = project
            .store
            .failed_events(20)
            .await?
            .iter()
            .map(|e| json!({ "id": e.id, "key": e.key.to_string(), "error": e.error, "when": when(e.accepted / 1000) }))
            .collect();
        let generations: Vec<Value> = project
            .store
            .generations(10)
            .await?
            .iter()
            .map(|g| {
                json!({ "id": g.id, "when": when(g.created), "kind": g.kind, "changed": g.summary["changed"],
                    "events": g.summary["events"], "seconds": g.summary["seconds"] })
            })
            .collect();
        let ctx = json!({
            "q": query, "collection": q.collection, "collections": site.config.collections.keys().collect::<Vec<_>>(),
            "docs": docs, "limit": PAGE, "pending": project.store.pending_events().await?,
            "failed": failed, "generations": generations, "done": q.done, "unchanged": q.unchanged,
        });
        Ok::<_, Failure>(d.page(Some(&s), "admin.html", ctx))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn moderate(State(d): S, form: FormPost) -> Response {
    let s = match d.require_form(&form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        admins_only(&s)?;
        let op = || match form.get("_action") {
            "takedown" => Some(Op::Takedown),
            "restore" => Some(Op::Restore),
            "flag" => Some(Op::Flag(FLAG_ADULT.into(), true)),
            "unflag" => Some(Op::Flag(FLAG_ADULT.into(), false)),
            _ => None,
        };
        if op().is_none() {
            return Err(Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "Choose an action."));
        }
        let keys: Vec<&str> = form.pairs.iter().filter(|(k, _)| k == "doc").map(|(_, v)| v.as_str()).collect();
        if keys.len() > PAGE as usize {
            return Err(Failure::new(StatusCode::UNPROCESSABLE_ENTITY, format!("Select at most {PAGE} documents.")));
        }
        let (mut done, mut unchanged) = (0, 0);
        for text in keys {
            let (collection, id) = text.split_once('/').unwrap_or((text, ""));
            let key = crate::input::doc_key(&d.api.project.site, collection, id)?;
            let op = op().unwrap_or(Op::Restore);
            let result = sesame_engine::write(&d.api.project, &s.actor(), &key, op, Debounce::NONE).await?;
            if result.event.is_some() {
                done += 1;
            } else {
                unchanged += 1;
            }
        }
        if done > 0 {
            d.api.accepted();
        }
        let back = |name: &str| form.get(name).to_string();
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &back("q"))
            .append_pair("collection", &back("collection"))
            .append_pair("done", &done.to_string())
            .append_pair("unchanged", &unchanged.to_string())
            .finish();
        Ok(Redirect::to(&format!("{}admin?{query}", d.path)).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
