//! The OpenAPI document at `/api/openapi.json`.
//!
//! The handlers' annotations give its skeleton (routes, bodies, the statuses
//! particular to each); this module completes it for the site at hand, so
//! that a generated client or an API fuzzer knows every answer it can get:
//!
//! - every operation lists every error status the shared layers produce
//!   (malformed input, authentication, limits, conflicts, an unavailable
//!   database), each with the JSON error body;
//! - path parameters carry the patterns the server enforces;
//! - the document routes are listed once per declared collection, with a
//!   body schema from the collection's field roles (the shapes the server
//!   checks before it accepts a write).

use serde_json::{Map, Value, json};
use sesame_site::Site;

/// Handles: lowercase letters and digits in groups joined by single hyphens.
pub(crate) const HANDLE_PATTERN: &str = "^[a-z0-9]+(-[a-z0-9]+)*$";
/// Document ids: `A-Z a-z 0-9 - _ . ~`, not starting with a dot.
pub(crate) const ID_PATTERN: &str = "^[A-Za-z0-9_~-][A-Za-z0-9._~-]*$";

/// What each error status means, in the document.
const ERRORS: [(&str, &str); 11] = [
    ("400", "Malformed request: JSON syntax or a path parameter of the wrong type."),
    ("401", "A valid bearer token is required."),
    ("403", "The account may not do this (another account's document, moderation, creation policy)."),
    ("404", "No such document, change, version, collection or site."),
    ("409", "Conflict: a handle taken or reserved, a path held by another document, moderation."),
    ("413", "The request body is larger than the configured limit."),
    ("415", "The request body is not application/json."),
    ("422", "A field is invalid; `field` names it."),
    ("429", "Over a rate limit; `Retry-After` says when to come back."),
    ("500", "Internal error (the cause is logged, never sent)."),
    ("503", "The database is unavailable or busy; retry shortly (`Retry-After`)."),
];

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
    })
}

/// The JSON Schema of a collection's documents as the server checks them:
/// the collection's own schema when it declares one (its local references
/// rewritten to point into the document), else each field with a role in the
/// shape that role needs, other fields free.
fn fields_schema(site: &Site, collection: &str) -> Value {
    if let Some(declared) = site.schema(collection) {
        return component(declared, &format!("Fields_{collection}"));
    }
    let roles = site.collection(collection);
    let nullable_string = json!({ "type": ["string", "null"] });
    let mut properties = Map::new();
    for field in [&roles.title, &roles.slug].into_iter().flatten() {
        properties.insert(field.clone(), nullable_string.clone());
    }
    if let Some(owner) = &roles.owner {
        properties.insert(owner.clone(), json!({ "type": ["string", "null"], "maxLength": 128 }));
    }
    if let Some(date) = &roles.date {
        properties.insert(
            date.clone(),
            json!({ "anyOf": [
                { "type": "string", "format": "date" },
                { "type": "string", "format": "date-time" },
                { "type": "null" }
            ] }),
        );
    }
    if let Some(tags) = &roles.tags {
        properties.insert(
            tags.clone(),
            json!({ "type": ["array", "null"], "items": { "type": "string", "maxLength": 100 } }),
        );
    }
    for field in &roles.markdown {
        match field.split_once('.') {
            None => {
                properties.insert(field.clone(), nullable_string.clone());
            }
            Some((list, sub)) => {
                properties.insert(
                    list.to_string(),
                    json!({ "type": ["array", "null"], "items": {
                        "type": "object", "properties": { sub: nullable_string.clone() }
                    } }),
                );
            }
        }
    }
    json!({
        "type": "object",
        "description": format!("The user fields of a {collection:?} document; fields with a role must fit it."),
        "properties": properties,
    })
}

/// Says what the server checks beyond a declared schema, for clients and
/// fuzzers to see: text holds no control characters but tab and line breaks
/// ([`sesame_site::refused_in_text`]), and an image field holds a
/// reference `HASH.EXT`. Each string schema is narrowed in place (an
/// existing pattern kept beside the new one), so references keep pointing
/// where they did.
fn narrow_strings(schema: &mut Value) {
    const NO_CONTROL: &str = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$";
    const MEDIA_REF: &str = "^[0-9a-f]{64}\\.(png|jpg|gif|webp)$";
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                // Property names are names, not schemas.
                if key == "properties" || key == "$defs" || key == "patternProperties" {
                    if let Some(children) = value.as_object_mut() {
                        children.values_mut().for_each(narrow_strings);
                    }
                } else if key != "enum" && key != "const" && key != "examples" && key != "default" {
                    narrow_strings(value);
                }
            }
            let string = match map.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
                _ => false,
            };
            if !string {
                return;
            }
            let pattern =
                if map.get("format").and_then(Value::as_str) == Some("media") { MEDIA_REF } else { NO_CONTROL };
            match map.get("pattern") {
                None => {
                    map.insert("pattern".into(), json!(pattern));
                }
                Some(existing) if existing != pattern => {
                    let all = map.entry("allOf").or_insert_with(|| json!([]));
                    if let Some(all) = all.as_array_mut() {
                        all.push(json!({ "pattern": pattern }));
                    }
                }
                Some(_) => {}
            }
        }
        Value::Array(items) => items.iter_mut().for_each(narrow_strings),
        _ => {}
    }
}

/// A declared schema as the component `name`.
fn component(declared: &Value, name: &str) -> Value {
    let mut schema = declared.clone();
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("$schema");
        obj.remove("$id");
    }
    rebase_refs(&mut schema, &format!("#/components/schemas/{name}"));
    schema
}

/// Rewrites `#/…` references of a schema moved to `base`.
fn rebase_refs(value: &mut Value, base: &str) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) if r.starts_with("#/") => *r = format!("{base}{}", &r[1..]),
                    (_, v) => rebase_refs(v, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rebase_refs(v, base)),
        _ => {}
    }
}

/// Completes the generated document for `site`.
pub(crate) fn document(site: &Site, generated: &utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(generated).unwrap_or_else(|_| json!({}));
    let collections: Vec<String> = site.config.collections.keys().cloned().collect();
    if let Some(schemas) = doc.pointer_mut("/components/schemas") {
        for c in &collections {
            schemas[format!("Fields_{c}")] = fields_schema(site, c);
            narrow_strings(&mut schemas[format!("Fields_{c}")]);
            if let Some(patch) = site.patch_schema(c) {
                schemas[format!("Patch_{c}")] = component(patch, &format!("Patch_{c}"));
                narrow_strings(&mut schemas[format!("Patch_{c}")]);
            }
        }
        // Moderation bodies name a declared collection and valid ids.
        for name in ["Target", "FlagIn", "ModerateIn"] {
            if let Some(p) = schemas.get_mut(name).and_then(|s| s.pointer_mut("/properties/collection")) {
                p["enum"] = json!(collections);
            }
        }
        let id = json!({ "type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": 128 });
        for pointer in [
            "/Target/properties/id",
            "/FlagIn/properties/id",
            "/ModerateIn/properties/removed/items",
            "/ModerateIn/properties/adult/items",
        ] {
            if let Some(p) = schemas.pointer_mut(pointer) {
                *p = id.clone();
            }
        }
        if let Some(p) = schemas.pointer_mut("/FlagIn/properties/flag") {
            *p = json!({ "type": "string", "pattern": "^[a-z0-9-]+$", "minLength": 1, "maxLength": 32 });
        }
        if let Some(p) = schemas.pointer_mut("/SignUp/properties/handle") {
            *p = json!({ "type": "string", "pattern": HANDLE_PATTERN, "minLength": 1, "maxLength": 63 });
        }
    }
    let sites = site.config.api.sites.clone();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    let mut expanded = Map::new();
    for (path, item) in std::mem::take(paths) {
        if path.contains("{collection}") {
            for c in &collections {
                let mut item = item.clone();
                for_each_operation(&mut item, |method, op| {
                    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                        params.retain(|p| p["name"] != "collection");
                    }
                    set_body_schema(site, method, op, c);
                });
                expanded.insert(path.replace("{collection}", c), item);
            }
        } else {
            let mut item = item.clone();
            if (path == "/api/sites/{handle}" || path == "/api/preview/sites/{handle}")
                && let Some(c) = &sites
            {
                for_each_operation(&mut item, |method, op| set_body_schema(site, method, op, c));
            }
            expanded.insert(path, item);
        }
    }
    for item in expanded.values_mut() {
        for_each_operation(item, complete_operation);
    }
    // A site's id becomes its owner's handle: at most 63 characters.
    if let Some(c) = &sites {
        let doc = format!("/collections/{c}/docs/{{id}}");
        for (_, item) in expanded.iter_mut().filter(|(path, _)| path.contains(&doc)) {
            for_each_operation(item, |_, op| {
                for p in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
                    if p["name"] == "id" {
                        p["schema"]["maxLength"] = json!(63);
                    }
                }
            });
        }
    }
    *paths = expanded;
    doc
}

fn for_each_operation(item: &mut Value, mut f: impl FnMut(&str, &mut Value)) {
    if let Some(item) = item.as_object_mut() {
        for (method, op) in item.iter_mut() {
            if ["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                f(method, op);
            }
        }
    }
}

/// Gives a document body (an object) the schema of collection `c`, in the
/// request (a PATCH: the schema of a merge patch) and in a returned document.
fn set_body_schema(site: &Site, method: &str, op: &mut Value, c: &str) {
    let fields = json!({ "$ref": format!("#/components/schemas/Fields_{c}") });
    // Only a body of user fields (a free-form object); a typed body (a
    // schedule, a link) keeps its own schema.
    if let Some(schema) =
        op.pointer_mut("/requestBody/content/application~1json/schema").filter(|s| s.get("$ref").is_none())
    {
        *schema = if method == "patch" && site.patch_schema(c).is_some() {
            json!({ "$ref": format!("#/components/schemas/Patch_{c}") })
        } else {
            fields.clone()
        };
    }
    if let Some(schema) = op.pointer_mut("/responses/200/content/application~1json/schema")
        && matches!(
            schema.get("$ref").and_then(Value::as_str),
            Some("#/components/schemas/DocOut" | "#/components/schemas/DraftOut")
        )
    {
        *schema = json!({ "allOf": [schema.clone(), { "type": "object", "properties": { "doc": fields } }] });
    }
}

/// Adds the error statuses, descriptions and parameter patterns.
fn complete_operation(_method: &str, op: &mut Value) {
    let has_body = op.get("requestBody").is_some();
    let secured = op.get("security").is_some();
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut() {
            let pattern = match p["name"].as_str() {
                Some("handle") => Some((HANDLE_PATTERN, 63)),
                Some("id") if p.pointer("/schema/type") == Some(&json!("string")) => Some((ID_PATTERN, 128)),
                _ => None,
            };
            if let Some((pattern, max)) = pattern {
                p["schema"] = json!({ "type": "string", "pattern": pattern, "minLength": 1, "maxLength": max });
            }
        }
    }
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { return };
    for (status, description) in ERRORS {
        let applies = match status {
            "401" | "403" => secured,
            "413" | "415" => has_body,
            _ => true,
        };
        if applies {
            responses.entry(status).or_insert_with(|| error_response(description));
        }
    }
    for (status, response) in responses.iter_mut() {
        if response.get("description").is_none_or(|d| d.as_str().is_none_or(str::is_empty)) {
            let text = ERRORS.iter().find(|(s, _)| s == status).map_or("Success.", |(_, d)| *d);
            response["description"] = json!(text);
        }
    }
}
