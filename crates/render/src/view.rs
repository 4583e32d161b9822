//! The template view of a document: its fields, system fields and derived values.

use std::collections::BTreeMap;

use minijinja::Value;
use sesame_model::{Document, FLAG_ADULT, media, time};
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

/// The user fields with each image reference (a field of `format: media`)
/// replaced by what a page needs: `ref`, `url`, `type`, `width`, `height`,
/// `srcset` (the resized variants and the original) and `variants`.
fn media_objects(site: &Site, doc: &Document) -> serde_json::Map<String, serde_json::Value> {
    let mut data = doc.data.clone();
    for (pointer, reference) in site.media_refs(&doc.key.collection, &doc.data) {
        let (Some(info), Some((hash, _))) = (doc.media.get(reference), media::parse_ref(reference)) else { continue };
        let url = |variant| format!("/{}", media::media_key(hash, info.format, variant));
        let variants: Vec<serde_json::Value> = info
            .variant_widths()
            .map(|w| {
                let height = info.variant_height(w);
                serde_json::json!({ "url": url(Some(w)), "type": "image/webp", "width": w, "height": height })
            })
            .collect();
        let mut srcset: Vec<String> = info.variant_widths().map(|w| format!("{} {w}w", url(Some(w)))).collect();
        if !srcset.is_empty() {
            srcset.push(format!("{} {}w", url(None), info.width));
        }
        let object = serde_json::json!({
            "ref": reference,
            "url": url(None),
            "type": info.format.content_type(),
            "width": info.width,
            "height": info.height,
            "srcset": srcset.join(", "),
            "variants": variants,
        });
        if let Some(slot) = pointer_mut(&mut data, &pointer) {
            *slot = object;
        }
    }
    data
}

/// The value at a JSON pointer of an object.
fn pointer_mut<'d>(
    data: &'d mut serde_json::Map<String, serde_json::Value>,
    pointer: &str,
) -> Option<&'d mut serde_json::Value> {
    let rest = pointer.strip_prefix('/')?;
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let value = data.get_mut(&first.replace("~1", "/").replace("~0", "~"))?;
    if tail.is_empty() { Some(value) } else { value.pointer_mut(&format!("/{tail}")) }
}

/// The document as templates see it: user fields, then system fields that
/// override them (`id`, `collection`, `owner`, `created`, `updated`, `status`,
/// `flags`, `adult`, `domain`), the role values `title` and `date`, its page
/// `url`, and `<field>_html` for each markdown field (`list.field` reaches
/// into lists).
pub(crate) fn document(site: &Site, doc: &Document, path: Option<&str>) -> Value {
    let roles = site.collection(&doc.key.collection);
    let top: Vec<&str> = roles.markdown.iter().filter(|f| !f.contains('.')).map(String::as_str).collect();
    let with_media;
    let data = if doc.media.is_empty() {
        &doc.data
    } else {
        with_media = media_objects(site, doc);
        &with_media
    };
    let mut view = fields(data, &top);
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
        ("domain", doc.domain.as_deref().map(Value::from).unwrap_or_default()),
    ];
    for (k, v) in system {
        view.insert(k.to_string(), v);
    }
    Value::from(view)
}
