//! The template view of a document: its fields, system fields and derived values.

use std::collections::BTreeMap;

use minijinja::Value;
use sesame_model::{Document, FLAG_ADULT, time};
use sesame_site::Site;

use crate::markdown::markdown_to_safe_html;

/// Converts JSON to a template value.
fn json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) => Value::from(f),
            _ => Value::from(n.to_string()),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => items.iter().map(json).collect(),
        serde_json::Value::Object(map) => Value::from(fields(map, &[])),
    }
}

/// Converts a JSON object's fields, adding `<field>_html` (sanitised, marked
/// safe) for each name in `markdown`.
fn fields(map: &serde_json::Map<String, serde_json::Value>, markdown: &[&str]) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = map.iter().map(|(k, v)| (k.clone(), json(v))).collect();
    for field in markdown {
        if let Some(text) = map.get(*field).and_then(|v| v.as_str()) {
            out.insert(format!("{field}_html"), Value::from_safe_string(markdown_to_safe_html(text)));
        }
    }
    out
}

/// The document as templates see it: user fields, then system fields that
/// override them (`id`, `collection`, `owner`, `created`, `updated`, `status`,
/// `flags`, `adult`), the role values `title` and `date`, its page `url`, and
/// `<field>_html` for each markdown field (`list.field` reaches into lists).
pub(crate) fn document(site: &Site, doc: &Document, path: Option<&str>) -> Value {
    let roles = site.collection(&doc.key.collection);
    let top: Vec<&str> = roles.markdown.iter().filter(|f| !f.contains('.')).map(String::as_str).collect();
    let mut view = fields(&doc.data, &top);
    for nested in roles.markdown.iter().filter_map(|f| f.split_once('.')) {
        let (list, sub) = nested;
        if let Some(serde_json::Value::Array(items)) = doc.data.get(list) {
            let converted: Vec<Value> = items
                .iter()
                .map(|item| match item {
                    serde_json::Value::Object(map) => Value::from(fields(map, &[sub])),
                    other => json(other),
                })
                .collect();
            view.insert(list.to_string(), Value::from(converted));
        }
    }
    let system = [
        ("id", Value::from(&*doc.key.id)),
        ("collection", Value::from(&*doc.key.collection)),
        ("owner", doc.owner.as_deref().map(Value::from).unwrap_or_default()),
        ("created", Value::from(time::rfc3339(doc.created))),
        ("updated", Value::from(time::rfc3339(doc.updated))),
        ("status", Value::from(doc.status.as_str())),
        ("flags", doc.flags.iter().map(|f| Value::from(f.as_str())).collect()),
        ("adult", Value::from(doc.has_flag(FLAG_ADULT))),
        ("title", Value::from(site.title(doc))),
        (
            "date",
            site.sort_date(doc)
                .filter(|_| roles.date.is_some())
                .map(time::rfc3339)
                .map(Value::from)
                .unwrap_or_default(),
        ),
        ("url", path.map(Value::from).unwrap_or_default()),
    ];
    for (k, v) in system {
        view.insert(k.to_string(), v);
    }
    Value::from(view)
}
