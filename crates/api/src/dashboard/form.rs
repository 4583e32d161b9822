//! The edit form of a document, generated from its collection's JSON Schema,
//! and the way back from the submitted form to the document's fields.
//!
//! Every input is named by the JSON pointer of the field it edits
//! (`/links/0/url`), the same pointer a validation error names, so errors
//! land next to their field. Lists are edited with submit buttons
//! (`_action=add:/links`, `remove:/links/0`, `up:…`, `down:…`) that work
//! without JavaScript.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

/// A submitted form: text fields by name (each name once: the last wins).
#[derive(Debug, Default)]
pub(super) struct Submitted {
    pub values: BTreeMap<String, String>,
}

impl Submitted {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

/// One line of the rendered form, in document order. Lists and groups open
/// and close around their contents, so a flat loop renders any nesting.
#[derive(Debug, Default, Serialize)]
pub(super) struct Row {
    /// `text`, `textarea`, `markdown`, `url`, `number`, `checkbox`, `select`,
    /// `image`, `json`, `group_start`, `group_end`, `list_start`, `list_end`,
    /// `item_start`, `item_end`.
    pub kind: &'static str,
    /// The JSON pointer of the field: the input's name.
    pub name: String,
    /// The element id (`f` and the pointer with `/` as `-`).
    pub id: String,
    pub label: String,
    pub help: Option<String>,
    pub value: String,
    pub error: Option<String>,
    pub required: bool,
    pub max: Option<u64>,
    pub options: Vec<String>,
    /// Where the current image is served (image rows).
    pub image: Option<String>,
    /// The position of a list item, and whether it is the last.
    pub index: usize,
    pub last: bool,
    /// `number` rows: `1` for integers, `any` otherwise.
    pub step: &'static str,
    /// Lists: what one item is called ("link" in "Links").
    pub singular: String,
}

fn singular(label: &str) -> String {
    let lower = label.to_lowercase();
    lower.strip_suffix('s').filter(|s| !s.is_empty()).unwrap_or(&lower).to_string()
}

/// The form of one collection.
pub(super) struct Form<'s> {
    root: &'s Value,
    /// Fields holding markdown, as dotted names (`sections.body`).
    markdown: &'s [String],
    /// Top-level fields the server fills in (the owner).
    hidden: Vec<&'s str>,
    /// The title field, shown first (the others follow by name).
    first: Option<&'s str>,
}

fn id_of(pointer: &str) -> String {
    format!("f{}", pointer.replace('/', "-"))
}

fn humanize(name: &str) -> String {
    let mut s = name.replace(['_', '-'], " ");
    if let Some(first) = s.get(..1) {
        s.replace_range(..1, &first.to_uppercase());
    }
    s
}

fn escape_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

impl<'s> Form<'s> {
    pub fn new(root: &'s Value, markdown: &'s [String], hidden: Vec<&'s str>, first: Option<&'s str>) -> Form<'s> {
        Form { root, markdown, hidden, first }
    }

    /// The document's own fields: the title first, none the server fills in.
    fn fields(&self) -> Vec<(&'s str, &'s Value, bool)> {
        let mut fields: Vec<_> =
            self.properties(self.root).into_iter().filter(|(n, ..)| !self.hidden.contains(n)).collect();
        fields.sort_by_key(|(name, ..)| Some(*name) != self.first);
        fields
    }

    /// Follows a local `$ref` (`#/$defs/x`), at most a few times.
    fn resolve(&self, mut schema: &'s Value) -> &'s Value {
        for _ in 0..8 {
            match schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
                Some(pointer) => match self.root.pointer(pointer) {
                    Some(target) => schema = target,
                    None => break,
                },
                None => break,
            }
        }
        schema
    }

    fn properties(&self, schema: &'s Value) -> Vec<(&'s str, &'s Value, bool)> {
        let required: BTreeSet<&str> =
            schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, s)| (name.as_str(), self.resolve(s), required.contains(name.as_str())))
            .collect()
    }

    fn kind(&self, schema: &Value, dotted: &str) -> &'static str {
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
            _ => vec![],
        };
        match types.as_slice() {
            ["object"] if schema.get("properties").is_some() => "group",
            ["array"] => "list",
            ["boolean"] => "checkbox",
            ["integer"] | ["number"] => "number",
            ["string"] => {
                let format = schema.get("format").and_then(Value::as_str);
                let pattern = schema.get("pattern").and_then(Value::as_str).unwrap_or_default();
                let long = schema.get("maxLength").and_then(Value::as_u64).is_none_or(|n| n > 200);
                if format == Some("media") {
                    "image"
                } else if schema.get("enum").is_some() {
                    "select"
                } else if self.markdown.iter().any(|m| m == dotted) {
                    "markdown"
                } else if format == Some("uri") || pattern.starts_with("^https?") {
                    "url"
                } else if long {
                    "textarea"
                } else {
                    "text"
                }
            }
            _ => "json",
        }
    }

    /// The rows showing `data`, with `errors` (by pointer) beside their fields.
    pub fn rows(&self, data: &Map<String, Value>, errors: &BTreeMap<String, String>) -> Vec<Row> {
        let mut rows = Vec::new();
        for (name, schema, required) in self.fields() {
            let pointer = format!("/{}", escape_segment(name));
            self.walk(schema, &pointer, name, humanize(name), required, data.get(name), errors, &mut rows);
        }
        rows
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        schema: &'s Value,
        pointer: &str,
        dotted: &str,
        label: String,
        required: bool,
        value: Option<&Value>,
        errors: &BTreeMap<String, String>,
        rows: &mut Vec<Row>,
    ) {
        let label = schema.get("title").and_then(Value::as_str).map_or(label, str::to_string);
        let row = |kind| Row {
            kind,
            name: pointer.to_string(),
            id: id_of(pointer),
            label: label.clone(),
            help: schema.get("description").and_then(Value::as_str).map(str::to_string),
            error: errors.get(pointer).cloned(),
            required,
            max: schema.get("maxLength").or_else(|| schema.get("maxItems")).and_then(Value::as_u64),
            ..Row::default()
        };
        match self.kind(schema, dotted) {
            "group" => {
                rows.push(row("group_start"));
                let object = value.and_then(Value::as_object);
                for (name, s, req) in self.properties(schema) {
                    let child = format!("{pointer}/{}", escape_segment(name));
                    let v = object.and_then(|o| o.get(name));
                    self.walk(s, &child, &format!("{dotted}.{name}"), humanize(name), req, v, errors, rows);
                }
                rows.push(row("group_end"));
            }
            "list" => {
                let items = self.resolve(schema.get("items").unwrap_or(&Value::Null));
                let elements = value.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                rows.push(Row { singular: singular(&label), ..row("list_start") });
                for (i, element) in elements.iter().enumerate() {
                    let item_pointer = format!("{pointer}/{i}");
                    let mut start = row("item_start");
                    start.index = i;
                    start.last = i + 1 == elements.len();
                    start.name = item_pointer.clone();
                    start.id = id_of(&item_pointer);
                    start.error = errors.get(&item_pointer).cloned();
                    rows.push(start);
                    let item_label = format!("{label} {}", i + 1);
                    if self.kind(items, dotted) == "group" {
                        for (name, s, req) in self.properties(items) {
                            let child = format!("{item_pointer}/{}", escape_segment(name));
                            let v = element.get(name);
                            self.walk(s, &child, &format!("{dotted}.{name}"), humanize(name), req, v, errors, rows);
                        }
                    } else {
                        self.walk(items, &item_pointer, dotted, item_label, false, Some(element), errors, rows);
                    }
                    rows.push(Row {
                        kind: "item_end",
                        name: item_pointer,
                        index: i,
                        last: i + 1 == elements.len(),
                        singular: singular(&label),
                        ..Row::default()
                    });
                }
                rows.push(Row { singular: singular(&label), ..row("list_end") });
            }
            kind => {
                let mut r = row(kind);
                r.value = match (kind, value) {
                    (_, None | Some(Value::Null)) => String::new(),
                    ("json", Some(v)) => serde_json::to_string_pretty(v).unwrap_or_default(),
                    (_, Some(Value::String(s))) => s.clone(),
                    (_, Some(v)) => v.to_string(),
                };
                if kind == "select" {
                    r.options = schema
                        .get("enum")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                        .collect();
                }
                if kind == "number" {
                    r.step = if schema.get("type").and_then(Value::as_str) == Some("integer") { "1" } else { "any" };
                }
                if kind == "image" {
                    // The page says how to pick one; the schema's words are for API clients.
                    r.help = None;
                    if sesame_model::media::parse_ref(&r.value).is_some() {
                        r.image = Some(format!("/media/{}", r.value));
                    }
                }
                rows.push(r);
            }
        }
    }

    /// The fields a submitted form holds, and the inputs that could not be
    /// read (by pointer). Empty inputs leave their field out, and list items
    /// with nothing in them are dropped, unless `keep_empty` (while the form
    /// is still being edited, so that list positions stay put).
    pub fn parse(&self, form: &Submitted, keep_empty: bool) -> (Map<String, Value>, BTreeMap<String, String>) {
        let mut errors = BTreeMap::new();
        let mut fields = Map::new();
        for (name, schema, _) in self.fields() {
            let pointer = format!("/{}", escape_segment(name));
            if let Some(v) = self.read(schema, &pointer, name, form, keep_empty, &mut errors) {
                fields.insert(name.to_string(), v);
            }
        }
        (fields, errors)
    }

    fn read(
        &self,
        schema: &'s Value,
        pointer: &str,
        dotted: &str,
        form: &Submitted,
        keep_empty: bool,
        errors: &mut BTreeMap<String, String>,
    ) -> Option<Value> {
        let text = || form.get(pointer).map(|t| t.replace("\r\n", "\n"));
        match self.kind(schema, dotted) {
            "group" => {
                let mut object = Map::new();
                for (name, s, _) in self.properties(schema) {
                    let child = format!("{pointer}/{}", escape_segment(name));
                    if let Some(v) = self.read(s, &child, &format!("{dotted}.{name}"), form, keep_empty, errors) {
                        object.insert(name.to_string(), v);
                    }
                }
                (!object.is_empty() || keep_empty && self.present(form, pointer)).then_some(Value::Object(object))
            }
            "list" => {
                let items = self.resolve(schema.get("items").unwrap_or(&Value::Null));
                let item_kind = self.kind(items, dotted);
                let prefix = format!("{pointer}/");
                let indices: BTreeSet<usize> = form
                    .values
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .filter_map(|(k, _)| k[prefix.len()..].split('/').next()?.parse().ok())
                    .collect();
                let mut list = Vec::new();
                for i in indices {
                    let item = format!("{pointer}/{i}");
                    let value = if item_kind == "group" {
                        let mut object = Map::new();
                        for (name, s, _) in self.properties(items) {
                            let child = format!("{item}/{}", escape_segment(name));
                            let d = format!("{dotted}.{name}");
                            if let Some(v) = self.read(s, &child, &d, form, keep_empty, errors) {
                                object.insert(name.to_string(), v);
                            }
                        }
                        (!object.is_empty() || keep_empty).then_some(Value::Object(object))
                    } else {
                        self.read(items, &item, dotted, form, keep_empty, errors)
                            .or_else(|| keep_empty.then(|| Value::String(String::new())))
                    };
                    list.extend(value);
                }
                (!list.is_empty()).then_some(Value::Array(list))
            }
            "checkbox" => Some(Value::Bool(text().is_some_and(|t| t == "on" || t == "true"))),
            "number" => {
                let t = text()?;
                let t = t.trim();
                if t.is_empty() {
                    return None;
                }
                let integer = schema.get("type").and_then(Value::as_str) == Some("integer");
                let parsed = if integer {
                    t.parse::<i64>().ok().map(Value::from)
                } else {
                    t.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number)
                };
                parsed.or_else(|| {
                    let what = if integer { "a whole number" } else { "a number" };
                    errors.insert(pointer.to_string(), format!("must be {what}"));
                    Some(Value::String(t.to_string()))
                })
            }
            "json" => {
                let t = text()?;
                if t.trim().is_empty() {
                    return None;
                }
                serde_json::from_str(&t).ok().or_else(|| {
                    errors.insert(pointer.to_string(), "must be JSON".into());
                    Some(Value::String(t))
                })
            }
            // Text of every kind, image references included.
            _ => text().filter(|t| !t.is_empty()).map(Value::String),
        }
    }

    /// Whether the form has any input at or below `pointer`.
    fn present(&self, form: &Submitted, pointer: &str) -> bool {
        let prefix = format!("{pointer}/");
        form.values.keys().any(|k| k == pointer || k.starts_with(&prefix))
    }
}

/// A list edit asked for by one of the form's buttons.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ListEdit<'a> {
    Add(&'a str),
    Remove(&'a str, usize),
    Up(&'a str, usize),
    Down(&'a str, usize),
}

impl<'a> ListEdit<'a> {
    /// Reads `add:/links`, `remove:/links/2`, `up:/links/1`, `down:/links/0`.
    pub fn parse(action: &'a str) -> Option<ListEdit<'a>> {
        let (verb, pointer) = action.split_once(':')?;
        if verb == "add" {
            return pointer.starts_with('/').then_some(ListEdit::Add(pointer));
        }
        let (list, index) = pointer.rsplit_once('/')?;
        let index = index.parse().ok()?;
        match verb {
            "remove" => Some(ListEdit::Remove(list, index)),
            "up" => Some(ListEdit::Up(list, index)),
            "down" => Some(ListEdit::Down(list, index)),
            _ => None,
        }
    }

    /// Applies the edit to `fields` (an unknown list or position is ignored).
    /// A new item is empty: `{}` when the list's items are objects.
    pub fn apply(&self, form: &Form<'_>, fields: &mut Map<String, Value>) {
        let list = match self {
            ListEdit::Add(p) | ListEdit::Remove(p, _) | ListEdit::Up(p, _) | ListEdit::Down(p, _) => *p,
        };
        // The schema of the list's items, found by walking the pointer.
        let mut schema = form.root;
        for segment in list.split('/').skip(1) {
            let s = form.resolve(schema);
            schema = match s.get("properties").and_then(|p| p.get(segment.replace("~1", "/").replace("~0", "~"))) {
                Some(next) => next,
                None if segment.parse::<usize>().is_ok() => s.get("items").unwrap_or(&Value::Null),
                None => return,
            };
        }
        let items = form.resolve(form.resolve(schema).get("items").unwrap_or(&Value::Null));
        let mut root = Value::Object(std::mem::take(fields));
        if root.pointer(list).is_none()
            && let Some((parent, name)) = list.rsplit_once('/')
            && let Some(Value::Object(o)) = root.pointer_mut(parent)
        {
            o.insert(name.replace("~1", "/").replace("~0", "~"), Value::Array(Vec::new()));
        }
        if let Some(Value::Array(a)) = root.pointer_mut(list) {
            match *self {
                ListEdit::Add(_) => a.push(if items.get("properties").is_some() {
                    Value::Object(Map::new())
                } else {
                    Value::String(String::new())
                }),
                ListEdit::Remove(_, i) if i < a.len() => {
                    a.remove(i);
                }
                ListEdit::Up(_, i) if i > 0 && i < a.len() => a.swap(i - 1, i),
                ListEdit::Down(_, i) if i + 1 < a.len() => a.swap(i, i + 1),
                _ => {}
            }
        }
        if let Value::Object(o) = root {
            *fields = o;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "owner": {"type": "string"},
                "name": {"type": "string", "maxLength": 100},
                "bio": {"type": "string", "maxLength": 2000},
                "age": {"type": "integer"},
                "avatar": {"$ref": "#/$defs/image"},
                "links": {"type": "array", "items": {"type": "object", "required": ["url"], "properties": {
                    "label": {"type": "string", "maxLength": 80},
                    "url": {"type": "string", "pattern": "^https?://[^\\s]+$"}
                }}},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}}
            },
            "$defs": {"image": {"type": "string", "format": "media"}}
        })
    }

    fn submitted(pairs: &[(&str, &str)]) -> Submitted {
        Submitted { values: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    #[test]
    fn rows_follow_the_schema_and_hide_server_fields() {
        let schema = schema();
        let markdown = vec!["bio".to_string()];
        let form = Form::new(&schema, &markdown, vec!["owner"], Some("name"));
        let image = format!("{}.png", "ab".repeat(32));
        let data = json!({"name": "Ann", "links": [{"url": "https://a.example"}], "avatar": image});
        let errors = BTreeMap::from([("/links/0/url".to_string(), "bad".to_string())]);
        let rows = form.rows(data.as_object().expect("object"), &errors);
        let kinds: Vec<(&str, &str)> = rows.iter().map(|r| (r.kind, r.name.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("text", "/name"),
                ("number", "/age"),
                ("image", "/avatar"),
                ("markdown", "/bio"),
                ("list_start", "/links"),
                ("item_start", "/links/0"),
                ("text", "/links/0/label"),
                ("url", "/links/0/url"),
                ("item_end", "/links/0"),
                ("list_end", "/links"),
                ("list_start", "/tags"),
                ("list_end", "/tags"),
            ]
        );
        let url = rows.iter().find(|r| r.name == "/links/0/url").expect("url row");
        assert_eq!(
            (url.error.as_deref(), url.value.as_str(), url.id.as_str()),
            (Some("bad"), "https://a.example", "f-links-0-url")
        );
        assert_eq!(rows[2].image, Some(format!("/media/{image}")));
    }

    #[test]
    fn a_form_reads_back_into_fields() {
        let schema = schema();
        let form = Form::new(&schema, &[], vec!["owner"], None);
        let (fields, errors) = form.parse(
            &submitted(&[
                ("/owner", "mallory"),
                ("/name", "Ann"),
                ("/bio", "line\r\nnext"),
                ("/age", "x"),
                ("/links/0/label", ""),
                ("/links/0/url", ""),
                ("/links/3/url", "https://b.example"),
                ("/tags/0", "a"),
            ]),
            false,
        );
        assert_eq!(
            Value::Object(fields),
            json!({"name": "Ann", "bio": "line\nnext", "age": "x", "links": [{"url": "https://b.example"}], "tags": ["a"]}),
            "server fields ignored, empty items dropped, positions renumbered"
        );
        assert_eq!(errors.get("/age").map(String::as_str), Some("must be a whole number"));
        let (kept, _) = form.parse(&submitted(&[("/links/0/url", ""), ("/links/1/url", "https://b.example")]), true);
        assert_eq!(Value::Object(kept), json!({"links": [{}, {"url": "https://b.example"}]}), "kept while editing");
    }

    #[test]
    fn list_buttons_edit_the_draft() {
        let schema = schema();
        let form = Form::new(&schema, &[], vec![], None);
        let mut fields = json!({"links": [{"url": "a"}, {"url": "b"}]}).as_object().cloned().expect("object");
        for action in ["up:/links/1", "add:/links", "remove:/links/0", "down:/links/0", "add:/tags", "remove:/links/99"]
        {
            ListEdit::parse(action).expect(action).apply(&form, &mut fields);
        }
        assert_eq!(Value::Object(fields), json!({"links": [{}, {"url": "a"}], "tags": [""]}));
        for bad in ["add:links", "remove:/links/x", "jump:/links/0", "remove"] {
            assert_eq!(ListEdit::parse(bad), None, "{bad}");
        }
    }
}
