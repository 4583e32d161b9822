//! The content model: what a document of a collection may hold, and how a
//! change turns a document into its next state.
//!
//! This is the one content transformation: every way a change comes in (the
//! API and the dashboard, `import`, `apply`, moderation, a rollback, a
//! preview) turns it into a document through [`Site::doc_key`] and
//! [`Site::next_state`], which own the key checks, the merge of a patch, who
//! a document belongs to ([`Writer`]) and two layers of field checks:
//!
//! - the **roles** of the collection's fields (a string title, a parseable
//!   date, a list of string tags, markdown strings), which the site model
//!   itself needs;
//! - the collection's **JSON Schema** (draft 2020-12), when it declares one:
//!   what the templates need. The format `media` marks a reference to an
//!   uploaded image (`HASH.EXT`).
//!
//! Every failure names the field by its JSON pointer (`/links/0/url`).

use std::sync::Arc;

use serde_json::{Map, Value};
use sesame_config::CreatePolicy;
use sesame_model::slug::validate_id;
use sesame_model::{DocKey, Document, Fields, Op, Status, merge_patch, time};

use crate::schema::{FieldError, escape, invalid};
use crate::site::Site;

/// Why a change cannot apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The document does not exist.
    Missing(DocKey),
    /// Fields are refused (at least one; the first is the one to show).
    Invalid(Vec<FieldError>),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Missing(key) => write!(f, "document {key} does not exist"),
            Rejection::Invalid(errors) => {
                let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                write!(f, "{}", all.join("; "))
            }
        }
    }
}

/// Why a document key is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// No collection of that name is declared.
    Collection(String),
    /// The id is not a string or an integer, or not a valid path segment.
    Id(String),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Collection(m) | KeyError::Id(m) => f.write_str(m),
        }
    }
}

/// Who a change comes from, as far as content goes: it decides who a
/// document belongs to. In a collection with an owner field:
///
/// - an **account**'s documents are its own, whatever the field says (the
///   fields are checked as sent first, owner included);
/// - an **admin**'s keep the owner the field names; without one, a document
///   keeps its owner, and a new one belongs to its id where each account
///   creates its own document (a site is its handle's), else to the admin;
/// - the **operator**'s tools (`import`, `apply`, `moderate`) take the field
///   as written.
///
/// In a collection without one, a document keeps its owner, and a new one
/// belongs to its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer<'a> {
    /// An account, by handle.
    Account(&'a str),
    /// An admin, by handle.
    Admin(&'a str),
    /// The operator, with the handle its changes are recorded under, if any.
    Operator(Option<&'a str>),
}

impl<'a> Writer<'a> {
    /// The handle a new document of a collection without an owner field
    /// belongs to.
    fn handle(self) -> Option<&'a str> {
        match self {
            Writer::Account(h) | Writer::Admin(h) => Some(h),
            Writer::Operator(h) => h,
        }
    }
}

/// Whether text may not hold `c`: the control characters (C0, DEL, C1)
/// other than tab, line feed and carriage return. PostgreSQL refuses a NUL,
/// and the others are no writing, only bytes a template would pass on raw
/// (into an `href`, a feed, a `<title>`).
pub fn refused_in_text(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// Refuses each string (or object key) at or under `pointer` holding a
/// character [`refused_in_text`].
fn control_characters(value: &Value, pointer: String, errors: &mut Vec<FieldError>) {
    const MESSAGE: &str = "must not contain control characters (tab and line breaks excepted)";
    match value {
        Value::String(s) if s.chars().any(refused_in_text) => errors.push(invalid(pointer, MESSAGE)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                control_characters(item, format!("{pointer}/{i}"), errors);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let at = format!("{pointer}/{}", escape(k));
                if k.chars().any(refused_in_text) {
                    errors.push(invalid(at, MESSAGE));
                } else {
                    control_characters(v, at, errors);
                }
            }
        }
        _ => {}
    }
}

impl Site {
    /// The key of document `id` of `collection`: the collection must be
    /// declared and the id a valid path segment.
    pub fn doc_key(&self, collection: &str, id: &str) -> Result<DocKey, KeyError> {
        self.declares(collection)?;
        validate_id(id).map_err(|e| KeyError::Id(format!("id {id:?} {e}")))?;
        Ok(DocKey::new(collection, id))
    }

    /// [`Site::doc_key`] of an id written in JSON (a string or an integer).
    pub fn doc_key_of(&self, collection: &str, id: &Value) -> Result<DocKey, KeyError> {
        match id {
            Value::String(s) => self.doc_key(collection, s),
            Value::Number(n) if n.is_u64() || n.is_i64() => self.doc_key(collection, &n.to_string()),
            _ => Err(KeyError::Id("\"id\" must be a string or an integer".into())),
        }
    }

    /// Whether `sesame.toml` declares `collection`; the error names those it does.
    pub fn declares(&self, collection: &str) -> Result<(), KeyError> {
        if self.config.collections.contains_key(collection) {
            return Ok(());
        }
        let known: Vec<&str> = self.config.collections.keys().map(String::as_str).collect();
        Err(KeyError::Collection(format!(
            "unknown collection {collection:?} (sesame.toml declares: {})",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        )))
    }

    /// Checks user fields against the collection's roles and schema; every
    /// failure, in order (role checks first).
    pub fn validate(&self, collection: &str, data: &Map<String, Value>) -> Result<(), Vec<FieldError>> {
        let mut errors = self.check_roles(collection, data);
        if let Some(schema) = self.schemas.get(collection) {
            let roles = errors.len();
            for e in schema.errors(data) {
                // A field its role refuses is reported once, by the role.
                if !errors[..roles].iter().any(|r| r.field == e.field) {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Checks a merge patch against the schema of patches the collection's
    /// schema implies (see [`crate::schema::patch_schema`]).
    pub fn validate_patch(&self, collection: &str, patch: &Map<String, Value>) -> Result<(), Vec<FieldError>> {
        let errors = self.schemas.get(collection).map(|schema| schema.patch_errors(patch)).unwrap_or_default();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The media references (`HASH.EXT`) of user fields, with their JSON
    /// pointers: the values of the fields the schema marks `format: media`.
    pub fn media_refs<'d>(&self, collection: &str, data: &'d Map<String, Value>) -> Vec<(String, &'d str)> {
        self.schemas.get(collection).map(|schema| schema.media_refs(data)).unwrap_or_default()
    }

    /// Whether the collection's schema marks any field `format: media`.
    pub fn declares_media(&self, collection: &str) -> bool {
        self.schemas.get(collection).is_some_and(|schema| schema.has_media())
    }

    /// Sets the owner field of `data` as [`Writer`] says; whether it changed.
    fn stamp_owner(
        &self,
        key: &DocKey,
        current: Option<&Document>,
        field: &str,
        data: &mut Map<String, Value>,
        writer: Writer<'_>,
    ) -> bool {
        let named = data.get(field).and_then(Value::as_str);
        let owner = match (writer, current) {
            (Writer::Account(handle), _) => Some(handle),
            (Writer::Admin(_), _) if named.is_some() => None,
            (Writer::Admin(_), Some(c)) => c.owner.as_deref(),
            (Writer::Admin(_), None) if self.collection(&key.collection).create == CreatePolicy::OwnHandle => {
                Some(&*key.id)
            }
            (Writer::Admin(handle), None) => Some(handle),
            (Writer::Operator(_), _) => None,
        };
        match owner {
            Some(owner) if named != Some(owner) => {
                data.insert(field.to_string(), owner.into());
                true
            }
            _ => false,
        }
    }

    /// The fields with a role must hold what the role needs.
    fn check_roles(&self, collection: &str, data: &Map<String, Value>) -> Vec<FieldError> {
        let roles = self.collection(collection);
        let mut errors = Vec::new();
        let string_or_null = |field: &str, what: &str, errors: &mut Vec<FieldError>| match data.get(field) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => errors.push(invalid(format!("/{field}"), format!("must be a string ({what})"))),
        };
        for (field, what) in [(&roles.title, "the title"), (&roles.slug, "the slug"), (&roles.owner, "the owner")] {
            if let Some(f) = field {
                string_or_null(f, what, &mut errors);
            }
        }
        for (name, value) in data {
            control_characters(value, format!("/{}", escape(name)), &mut errors);
        }
        if let Some(f) = &roles.owner
            && data.get(f).and_then(Value::as_str).is_some_and(|o| o.chars().count() > sesame_model::slug::MAX_SEGMENT)
        {
            errors.push(invalid(format!("/{f}"), "must be at most 128 characters"));
        }
        if let Some(f) = &roles.date {
            match data.get(f) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if time::parse_date(s).is_some() => {}
                Some(_) => errors.push(invalid(format!("/{f}"), "must be a date: YYYY-MM-DD or RFC 3339")),
            }
        }
        if let Some(f) = &roles.tags {
            match data.get(f) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items))
                    if items.iter().all(|t| t.as_str().is_some_and(|s| s.chars().count() <= 100)) => {}
                Some(_) => errors.push(invalid(format!("/{f}"), "must be a list of strings of at most 100 characters")),
            }
        }
        for field in &roles.markdown {
            match field.split_once('.') {
                None => string_or_null(field, "markdown", &mut errors),
                Some((list, sub)) => match data.get(list) {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(items)) => {
                        for (i, item) in items.iter().enumerate() {
                            match item.as_object().map(|o| o.get(sub)) {
                                Some(None | Some(Value::Null | Value::String(_))) => {}
                                Some(Some(_)) => {
                                    errors.push(invalid(format!("/{list}/{i}/{sub}"), "must be a string (markdown)"))
                                }
                                None => errors.push(invalid(format!("/{list}/{i}"), "must be an object")),
                            }
                        }
                    }
                    Some(_) => errors.push(invalid(format!("/{list}"), "must be a list")),
                },
            }
        }
        errors
    }

    /// The document after `op`, given its current state: `Ok(None)` when the
    /// op changes nothing (it is then not recorded), `Ok(Some(None))` for a
    /// deletion. The one function from a change to a next state, for every
    /// way changes arrive: a patch is merged here, the owner decided here (see
    /// [`Writer`]) and new user fields validated here.
    ///
    /// Status and flags change only by moderation ops, and the domain only
    /// by the platform's: a put, a patch or a revert keeps them. `media` of the result is left to the caller, who
    /// resolves the references against what was uploaded.
    pub fn next_state(
        &self,
        key: &DocKey,
        current: Option<&Document>,
        op: &Op,
        writer: Writer<'_>,
        now: i64,
    ) -> Result<Option<Option<Document>>, Rejection> {
        let fields = |mut data: Map<String, Value>| -> Result<Document, Rejection> {
            self.validate(&key.collection, &data).map_err(Rejection::Invalid)?;
            let owner = match &self.collection(&key.collection).owner {
                Some(field) => {
                    // A rollback restores the version's fields as they were.
                    if !matches!(op, Op::Revert(_)) && self.stamp_owner(key, current, field, &mut data, writer) {
                        self.validate(&key.collection, &data).map_err(Rejection::Invalid)?;
                    }
                    data.get(field).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(Arc::from)
                }
                None => current.map_or_else(|| writer.handle().map(Arc::from), |c| c.owner.clone()),
            };
            Ok(Document {
                key: key.clone(),
                owner,
                created: current.map_or(now, |c| c.created),
                updated: now,
                status: current.map_or(Status::Live, |c| c.status),
                flags: current.map(|c| c.flags.clone()).unwrap_or_default(),
                data: Fields::new(&data),
                media: current.map(|c| c.media.clone()).unwrap_or_default(),
                domain: current.and_then(|c| c.domain.clone()),
            })
        };
        let mut doc = match (op, current) {
            (Op::Put(data), _) => fields(data.clone())?,
            (Op::Patch(patch), Some(c)) => {
                self.validate_patch(&key.collection, patch).map_err(Rejection::Invalid)?;
                let mut data = c.data.to_map();
                merge_patch(&mut data, patch.clone());
                fields(data)?
            }
            // A revert restores a version of a document that exists: a
            // deleted one is written anew (with the checks of a new one).
            (Op::Revert(version), Some(_)) => fields(version.data.to_map())?,
            (Op::Delete, Some(_)) => return Ok(Some(None)),
            (_, None) => return Err(Rejection::Missing(key.clone())),
            (_, Some(c)) => c.clone(),
        };
        let content = matches!(op, Op::Put(_) | Op::Patch(_) | Op::Revert(_));
        if content {
            if let Some(c) = current
                && c.data == doc.data
                && c.owner == doc.owner
            {
                return Ok(None);
            }
            return Ok(Some(Some(doc)));
        }
        let before = (doc.status, doc.flags.clone(), doc.domain.clone());
        match op {
            Op::Takedown => doc.status = Status::Removed,
            Op::Restore => doc.status = Status::Live,
            Op::Flag(flag, value) => {
                let ok = !flag.is_empty()
                    && flag.len() <= 32
                    && flag.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !ok {
                    return Err(Rejection::Invalid(vec![invalid(
                        "/flag",
                        format!("{flag:?} must be 1-32 lowercase letters, digits or '-'"),
                    )]));
                }
                doc.set_flag(flag, *value);
            }
            Op::Domain(host) => doc.domain = host.as_deref().map(Arc::from),
            _ => {}
        }
        if (doc.status, &doc.flags, &doc.domain) == (before.0, &before.1, &before.2) {
            return Ok(None);
        }
        doc.updated = now;
        Ok(Some(Some(doc)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn site(schema: Value) -> Arc<Site> {
        let config = sesame_config::Config::parse(
            "base_url = \"https://example.org\"\n[collections.sites]\ntitle = \"name\"\nmarkdown = [\"bio\", \"sections.body\"]\n",
            std::path::Path::new("sesame.toml"),
        )
        .expect("config");
        Site::with_schemas(config, BTreeMap::from([("sites".to_string(), schema)])).expect("schema")
    }

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn a_patch_may_remove_fields_but_not_name_unknown_ones() {
        let site = site(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["name"],
            "properties": { "name": { "type": "string" }, "sections": { "type": "array" } }
        }));
        let key = DocKey::new("sites", "ada");
        let put = Op::Put(object(json!({"name": "Ada", "sections": []})));
        let current =
            site.next_state(&key, None, &put, Writer::Operator(None), 1).expect("ok").expect("changed").expect("doc");
        let patch = |v: Value| site.next_state(&key, Some(&current), &Op::Patch(object(v)), Writer::Operator(None), 2);
        let removed = patch(json!({"sections": null})).expect("ok").expect("changed").expect("kept");
        assert_eq!(Value::Object(removed.data.to_map()), json!({"name": "Ada"}));
        let Err(Rejection::Invalid(errors)) = patch(json!({"": null})) else { panic!("an unknown field is refused") };
        assert_eq!(errors[0].field, "");
        let Err(Rejection::Invalid(errors)) = patch(json!({"sections": 3})) else { panic!("a wrong type is refused") };
        assert_eq!(errors[0].field, "/sections");
        let Err(Rejection::Invalid(errors)) = patch(json!({"name": null})) else {
            panic!("the patched document must still hold its required fields")
        };
        assert_eq!(errors[0].field, "");
    }

    #[test]
    fn failures_name_their_field_by_json_pointer() {
        let site = site(json!({
            "type": "object",
            "properties": {
                "links": { "type": "array", "items": { "type": "object", "properties": {
                    "url": { "type": "string", "pattern": "^https?://" } } } },
                "avatar": { "$ref": "#/$defs/media" },
                "gallery": { "type": "array", "items": { "type": "string", "format": "media" } }
            },
            "$defs": { "media": { "type": "string", "format": "media" } }
        }));
        let errors = site.validate("sites", &object(json!({"links": 5}))).expect_err("refused");
        assert_eq!(errors[0].field, "/links");
        let errors = site
            .validate("sites", &object(json!({"links": [{"url": "https://a"}, {"url": "javascript:x"}], "name": 3})))
            .expect_err("refused");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["/name", "/links/1/url"], "roles first, then the schema: {errors:?}");
        let errors = site.validate("sites", &object(json!({"sections": [{"body": 1}]}))).expect_err("refused");
        assert_eq!(errors[0].field, "/sections/0/body");
        let hash = "ab".repeat(32);
        let errors = site.validate("sites", &object(json!({"avatar": "nope.png"}))).expect_err("refused");
        assert_eq!(errors[0].field, "/avatar", "format media is checked");
        let doc = object(json!({"avatar": format!("{hash}.png"), "gallery": [format!("{hash}.gif")]}));
        assert!(site.validate("sites", &doc).is_ok());
        let refs = site.media_refs("sites", &doc);
        assert_eq!(
            refs,
            vec![
                ("/avatar".to_string(), format!("{hash}.png").as_str()),
                ("/gallery/0".to_string(), format!("{hash}.gif").as_str())
            ]
        );
    }

    /// Regressions: the OpenAPI fuzzer stored an owner with a NUL character,
    /// which PostgreSQL refused with a 500 (SQLite took it), and a NUL in a
    /// link's URL was written raw into an `href`.
    #[test]
    fn text_holds_no_control_characters() {
        let site = site(json!({"type": "object"}));
        for (fields, pointer) in [
            (json!({"name": "a\u{0}b"}), "/name"),
            (json!({"bio": "a\u{7}b"}), "/bio"),
            (json!({"links": [{"url": "https://a.example/\u{0}"}]}), "/links/0/url"),
            (json!({"sections": [{"body": "x\u{85}y"}]}), "/sections/0/body"),
            (json!({"meta": {"k\u{1b}": "v"}}), "/meta/k\u{1b}"),
        ] {
            let errors = site.validate("sites", &object(fields.clone())).expect_err("refused");
            assert_eq!(errors[0].field, pointer, "{fields}");
            assert!(errors[0].message.starts_with("must not contain control characters"), "{fields}");
        }
        let prose = json!({"bio": "Tabs\tand\r\nline breaks\nare writing.", "name": "Zoë ✓"});
        assert!(site.validate("sites", &object(prose)).is_ok());
    }

    #[test]
    fn ops_keep_moderation_and_skip_no_ops() {
        let site = site(json!({"type": "object"}));
        let key = DocKey::new("sites", "ada");
        let put = |name: &str| Op::Put(object(json!({ "name": name })));
        let doc = site
            .next_state(&key, None, &put("Ada"), Writer::Account("ada"), 10)
            .expect("ok")
            .expect("changed")
            .expect("doc");
        assert_eq!((doc.status, doc.owner.as_deref(), doc.created), (Status::Live, Some("ada"), 10));
        assert_eq!(
            site.next_state(&key, Some(&doc), &put("Ada"), Writer::Operator(None), 11),
            Ok(None),
            "no change, no event"
        );
        let down = site
            .next_state(&key, Some(&doc), &Op::Takedown, Writer::Operator(None), 12)
            .expect("ok")
            .expect("changed")
            .expect("d");
        let edited = site
            .next_state(&key, Some(&down), &put("Ada 2"), Writer::Operator(None), 13)
            .expect("ok")
            .expect("c")
            .expect("d");
        assert_eq!(edited.status, Status::Removed, "a write keeps a takedown");
        let reverted = site
            .next_state(&key, Some(&edited), &Op::Revert(Box::new(doc.clone())), Writer::Operator(None), 14)
            .expect("ok")
            .expect("c");
        assert_eq!(reverted.map(|d| (d.status, d.data)), Some((Status::Removed, doc.data.clone())), "so does a revert");
        let patched = site
            .next_state(
                &key,
                Some(&doc),
                &Op::Patch(object(json!({"name": null, "bio": "x"}))),
                Writer::Operator(None),
                15,
            )
            .expect("ok")
            .expect("c")
            .expect("d");
        assert_eq!(serde_json::Value::Object(patched.data.to_map()), json!({"bio": "x"}));
        assert!(matches!(
            site.next_state(&key, None, &Op::Takedown, Writer::Operator(None), 1),
            Err(Rejection::Missing(_))
        ));
        let revert = Op::Revert(Box::new(doc.clone()));
        assert!(
            matches!(site.next_state(&key, None, &revert, Writer::Admin("root"), 1), Err(Rejection::Missing(_))),
            "a deleted document is not brought back by a rollback"
        );
        assert!(matches!(
            site.next_state(&key, Some(&doc), &Op::Flag("Bad Flag".into(), true), Writer::Operator(None), 1),
            Err(Rejection::Invalid(_))
        ));
    }
}
