//! The template view of a document: its fields, system fields and derived values.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{Error, State, Value};
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
fn media_objects(
    site: &Site,
    doc: &Document,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut data = fields.clone();
    for (pointer, reference) in site.media_refs(&doc.key.collection, fields) {
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
    Value::from(document_fields(site, doc, path))
}

fn document_fields(site: &Site, doc: &Document, path: Option<&str>) -> BTreeMap<String, Value> {
    let roles = site.collection(&doc.key.collection);
    let top: Vec<&str> = roles.markdown.iter().filter(|f| !f.contains('.')).map(String::as_str).collect();
    let raw = doc.data.to_map();
    let with_media;
    let data = if doc.media.is_empty() {
        &raw
    } else {
        with_media = media_objects(site, doc, &raw);
        &with_media
    };
    let mut view = fields(data, &top);
    for nested in roles.markdown.iter().filter_map(|f| f.split_once('.')) {
        let (list, sub) = nested;
        if let Some(serde_json::Value::Array(items)) = raw.get(list) {
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
    view
}

/// A document on a listing page (`items`): the same map as [`document`],
/// built when a template first reads it. A card that `partial_cached` kept
/// for this version of the document is spliced without building it.
pub(crate) struct Item {
    site: Arc<Site>,
    /// The version shown: `Arc`s of a document are never changed in place
    /// (a new version is a new allocation).
    pub(crate) doc: Arc<Document>,
    pub(crate) path: Option<String>,
    fields: OnceLock<Arc<BTreeMap<String, Value>>>,
}

impl Item {
    pub(crate) fn value(site: &Arc<Site>, doc: &Arc<Document>, path: Option<&str>) -> Value {
        Value::from_object(Item {
            site: site.clone(),
            doc: doc.clone(),
            path: path.map(str::to_string),
            fields: OnceLock::new(),
        })
    }

    fn fields(&self) -> &Arc<BTreeMap<String, Value>> {
        self.fields.get_or_init(|| Arc::new(document_fields(&self.site, &self.doc, self.path.as_deref())))
    }
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fields().fmt(f)
    }
}

/// Every question goes to the map [`document`] makes, so an item behaves
/// in templates exactly as that map does.
impl Object for Item {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        self.fields().repr()
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.fields().get_value(key)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.fields().get_value_by_str(key)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.fields().enumerate()
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        self.fields().enumerator_len()
    }

    fn is_true(self: &Arc<Self>) -> bool {
        self.fields().is_true()
    }

    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        self.fields().call_method(state, method, args)
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fields().render(f)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sesame_model::{DocKey, Status};

    use super::*;

    #[test]
    fn a_listing_item_reads_in_templates_as_the_document_map_does() {
        let config = sesame_config::Config::parse(
            "base_url = \"https://example.org\"\n[collections.items]\ntitle = \"title\"\nmarkdown = [\"bio\"]\n",
            Path::new("sesame.toml"),
        )
        .unwrap();
        let site = Site::new(config);
        let data = serde_json::json!({"title": "<T>", "bio": "*b*", "tags": ["a", "b"], "n": 1.5, "nested": {"x": 1}});
        let doc = Arc::new(Document {
            key: DocKey::new("items", "1"),
            owner: Some("o".into()),
            created: 0,
            updated: 0,
            status: Status::Live,
            flags: vec!["adult".into()],
            data: data.as_object().unwrap().clone().into(),
            media: Default::default(),
            domain: None,
        });
        let template = "{{ x }}|{{ x | tojson }}|{{ x | length }}|{{ x.title }}|{{ x['bio_html'] }}|{{ x.missing is undefined }}\
                        |{% for k in x %}{{ k }},{% endfor %}|{% for k, v in x | items %}{{ k }}={{ v }};{% endfor %}\
                        |{{ x is mapping }}|{{ x | dictsort | first }}|{{ x == y }}|{{ x.n }}";
        let env = minijinja::Environment::new();
        let render = |x: Value| {
            let y = document(&site, &doc, Some("/items/1/"));
            env.render_str(template, minijinja::context! { x => x, y => y }).unwrap()
        };
        let item = render(Item::value(&site, &doc, Some("/items/1/")));
        let map = render(document(&site, &doc, Some("/items/1/")));
        assert_eq!(item, map);
        assert!(item.contains("|True|"), "{item}");
    }
}
