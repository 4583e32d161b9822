//! A collection's JSON Schema (draft 2020-12), compiled once: the checks of
//! whole documents and of merge patches, and where media references are
//! (the format `media`). Every failure names the field by its JSON pointer.

use serde_json::{Map, Value};

/// A field whose value is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON pointer of the field, e.g. `/links/0/url` (`""`: the whole document).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.field, self.message) }
    }
}

/// A schema that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the schema of collection {collection:?} is invalid: {message}")]
pub struct SchemaError {
    /// The collection.
    pub collection: String,
    /// What is wrong.
    pub message: String,
}

/// A step of the way from a document to one of its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A named property.
    Key(String),
    /// Every element of an array.
    Items,
    /// Every property of an object.
    Values,
}

/// A collection's compiled schema.
pub(crate) struct Schema {
    pub source: Value,
    validator: jsonschema::Validator,
    /// What a merge patch (RFC 7396) of a document may hold, for the API
    /// description: see [`patch_schema`].
    pub patch_source: Value,
    /// Checks the values a patch sets: the schema without `required`.
    patch_values: jsonschema::Validator,
    /// Checks the names a patch removes (sets to `null`): those the schema
    /// knows, unless it takes any.
    patch_removals: jsonschema::Validator,
    /// Where media references may be, by the schema's `format: media`.
    media: Vec<Vec<Step>>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("media", &self.media).finish_non_exhaustive()
    }
}

impl Schema {
    /// What the schema refuses in a whole document's user fields.
    pub(crate) fn errors(&self, data: &Map<String, Value>) -> Vec<FieldError> {
        let instance = Value::Object(data.clone());
        self.validator.iter_errors(&instance).map(|e| invalid(e.instance_path().to_string(), e.to_string())).collect()
    }

    /// What the schema of patches refuses in a merge patch.
    pub(crate) fn patch_errors(&self, patch: &Map<String, Value>) -> Vec<FieldError> {
        // Two checks rather than one of the nullable schema, so that a
        // failure names the deepest field rather than the `anyOf`.
        let (removals, values): (Map<String, Value>, Map<String, Value>) =
            patch.clone().into_iter().partition(|(_, v)| v.is_null());
        let mut errors = Vec::new();
        for (validator, instance) in [(&self.patch_removals, removals), (&self.patch_values, values)] {
            let instance = Value::Object(instance);
            errors.extend(
                validator.iter_errors(&instance).map(|e| invalid(e.instance_path().to_string(), e.to_string())),
            );
        }
        errors
    }

    /// Whether any field is marked `format: media`.
    pub(crate) fn has_media(&self) -> bool {
        !self.media.is_empty()
    }

    /// The values of the fields marked `format: media`, with their pointers.
    pub(crate) fn media_refs<'d>(&self, data: &'d Map<String, Value>) -> Vec<(String, &'d str)> {
        let mut out = Vec::new();
        for steps in &self.media {
            // The document is an object: its first step names its fields.
            match steps.split_first() {
                Some((Step::Key(k), rest)) => {
                    if let Some(v) = data.get(k) {
                        values_at(v, rest, format!("/{}", escape(k)), &mut out);
                    }
                }
                Some((Step::Values, rest)) => {
                    for (k, v) in data {
                        values_at(v, rest, format!("/{}", escape(k)), &mut out);
                    }
                }
                _ => {}
            }
        }
        out
    }

    pub(crate) fn compile(collection: &str, source: Value) -> Result<Schema, SchemaError> {
        let error = |message: String| SchemaError { collection: collection.to_string(), message };
        let build = |schema: &Value| {
            jsonschema::draft202012::options()
                .should_validate_formats(true)
                .with_format("media", |s: &str| sesame_model::media::parse_ref(s).is_some())
                .build(schema)
                .map_err(|e| error(e.to_string()))
        };
        let validator = build(&source)?;
        let patch_values = build(&without_requirements(&source))?;
        let patch_removals = build(&removals_schema(&source))?;
        let mut media = Vec::new();
        media_steps(&source, &source, &mut Vec::new(), &mut media, 0);
        Ok(Schema { patch_source: patch_schema(&source), source, validator, patch_values, patch_removals, media })
    }
}

/// Keywords of a document schema that only a whole document can meet.
const REQUIREMENTS: [&str; 7] =
    ["required", "minProperties", "dependentRequired", "dependentSchemas", "if", "then", "else"];

fn without_requirements(schema: &Value) -> Value {
    let mut out = schema.clone();
    if let Some(obj) = out.as_object_mut() {
        REQUIREMENTS.iter().for_each(|k| _ = obj.remove(*k));
    }
    out
}

/// A schema that takes the field names `schema` allows, whatever their value.
fn removals_schema(schema: &Value) -> Value {
    let any = |v: Option<&Value>| -> Map<String, Value> {
        v.and_then(Value::as_object)
            .map(|m| m.keys().map(|k| (k.clone(), Value::Bool(true))).collect())
            .unwrap_or_default()
    };
    let mut out = Map::new();
    out.insert("properties".into(), Value::Object(any(schema.get("properties"))));
    out.insert("patternProperties".into(), Value::Object(any(schema.get("patternProperties"))));
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    out.insert("additionalProperties".into(), Value::Bool(!closed));
    if let Some(names) = schema.get("propertyNames") {
        out.insert("propertyNames".into(), names.clone());
    }
    if let Some(defs) = schema.get("$defs") {
        out.insert("$defs".into(), defs.clone());
    }
    Value::Object(out)
}

/// The schema of a merge patch of documents of `schema`: each top-level
/// field may be `null` (removes it) and none is required, since the patched
/// document is checked whole afterwards. Unknown fields stay refused when the
/// schema refuses them, so that a typo is an error rather than a no-op.
/// Nested objects are replaced or merged by RFC 7396 and checked as written.
pub(crate) fn patch_schema(schema: &Value) -> Value {
    let mut patch = without_requirements(schema);
    let Some(obj) = patch.as_object_mut() else { return patch };
    let nullable = |v: &mut Value| *v = serde_json::json!({ "anyOf": [v.take(), { "type": "null" }] });
    for keyword in ["properties", "patternProperties"] {
        if let Some(Value::Object(fields)) = obj.get_mut(keyword) {
            fields.values_mut().for_each(nullable);
        }
    }
    if let Some(extra) = obj.get_mut("additionalProperties").filter(|v| v.is_object()) {
        nullable(extra);
    }
    patch
}

/// Finds the subschemas with `format: media`, following properties, items,
/// additional properties, combinators and local `$ref`s.
fn media_steps(root: &Value, schema: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>, depth: usize) {
    let Some(obj) = schema.as_object().filter(|_| depth < 32) else { return };
    if obj.get("format").and_then(Value::as_str) == Some("media") && !out.contains(path) {
        out.push(path.clone());
    }
    if let Some(target) = obj.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#'))
        && let Some(resolved) = root.pointer(target)
    {
        media_steps(root, resolved, path, out, depth + 1);
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        for sub in obj.get(combinator).and_then(Value::as_array).into_iter().flatten() {
            media_steps(root, sub, path, out, depth + 1);
        }
    }
    for (key, sub) in obj.get("properties").and_then(Value::as_object).into_iter().flatten() {
        path.push(Step::Key(key.clone()));
        media_steps(root, sub, path, out, depth + 1);
        path.pop();
    }
    for (keyword, step) in [("items", Step::Items), ("additionalProperties", Step::Values)] {
        if let Some(sub) = obj.get(keyword).filter(|s| s.is_object()) {
            path.push(step);
            media_steps(root, sub, path, out, depth + 1);
            path.pop();
        }
    }
}

/// A property name as a JSON pointer segment.
pub(crate) fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The string values at the end of `steps`, with their JSON pointers.
fn values_at<'d>(value: &'d Value, steps: &[Step], pointer: String, out: &mut Vec<(String, &'d str)>) {
    match (steps.first(), value) {
        (None, Value::String(s)) => out.push((pointer, s)),
        (Some(Step::Key(k)), Value::Object(map)) => {
            if let Some(v) = map.get(k) {
                values_at(v, &steps[1..], format!("{pointer}/{}", escape(k)), out);
            }
        }
        (Some(Step::Items), Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                values_at(v, &steps[1..], format!("{pointer}/{i}"), out);
            }
        }
        (Some(Step::Values), Value::Object(map)) => {
            for (k, v) in map {
                values_at(v, &steps[1..], format!("{pointer}/{}", escape(k)), out);
            }
        }
        _ => {}
    }
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}
