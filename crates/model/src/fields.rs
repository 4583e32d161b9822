//! [`Fields`]: a document's user fields, held as compact JSON text.
//!
//! A site keeps every published document in memory (the publisher's model,
//! the router's for pages rendered on request). As a parsed
//! `serde_json::Map` a gallery item of 190 bytes of JSON took about 1.5 KB
//! (a B-tree node, a `String` per key, a `Value` per field); as its text it
//! takes its length. Fields are read where a rule or a page needs them: a
//! single field by scanning the text without allocating, the whole map by
//! parsing it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A JSON object as `serde_json` writes a `Map`: keys sorted, no spaces.
/// One text per content, so two are equal exactly when their maps are.
#[derive(Clone, PartialEq, Eq)]
pub struct Fields(Box<str>);

impl Default for Fields {
    fn default() -> Fields {
        Fields("{}".into())
    }
}

impl Fields {
    /// The fields of a map.
    pub fn new(map: &Map<String, Value>) -> Fields {
        Fields(serde_json::to_string(map).expect("a map of JSON values always serializes").into_boxed_str())
    }

    /// Fields from stored text, which sesame wrote with [`Fields::as_json`]:
    /// checked to be one JSON object, kept as it is.
    pub fn from_stored(text: String) -> Result<Fields, serde_json::Error> {
        if !text.starts_with('{') {
            return Err(de::Error::custom("expected a JSON object"));
        }
        serde_json::from_str::<IgnoredAny>(&text)?;
        Ok(Fields(text.into_boxed_str()))
    }

    /// The text, as stored.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// Every field, parsed.
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.as_json()).expect("fields hold one JSON object")
    }

    /// Sets one field (parsing and writing the whole text: for the rare
    /// write, not for reading).
    pub fn set(&mut self, field: &str, value: Value) {
        let mut map = self.to_map();
        map.insert(field.to_string(), value);
        *self = Fields::new(&map);
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.as_json() == "{}"
    }

    /// One field's value.
    pub fn get(&self, field: &str) -> Option<Value> {
        self.find(field, |v| serde_json::from_str(v.get()).ok())
    }

    /// One field's value if it is a string; borrowed from the text unless it
    /// holds escapes.
    pub fn get_str(&self, field: &str) -> Option<Cow<'_, str>> {
        self.find(field, |v| {
            let s = v.get();
            if !s.starts_with('"') {
                return None;
            }
            match &s[1..s.len() - 1] {
                plain if !plain.contains('\\') => Some(Cow::Borrowed(plain)),
                _ => serde_json::from_str::<String>(s).ok().map(Cow::Owned),
            }
        })
    }

    /// Scans the text for `field` and hands its raw value to `read`.
    fn find<'f, T>(
        &'f self,
        field: &str,
        read: impl FnOnce(&'f serde_json::value::RawValue) -> Option<T>,
    ) -> Option<T> {
        let mut found = None;
        let mut de = serde_json::Deserializer::from_str(self.as_json());
        // Stopped by an error once found (serde_json would otherwise read
        // the object to its end), or read through when absent.
        let _ = Find { field, found: &mut found }.deserialize(&mut de);
        read(found?)
    }
}

impl From<Map<String, Value>> for Fields {
    fn from(map: Map<String, Value>) -> Fields {
        Fields::new(&map)
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fields, D::Error> {
        Map::deserialize(deserializer).map(|m| Fields::new(&m))
    }
}

/// Finds one key of an object, skipping the others' values unparsed; the
/// value goes to `found`.
struct Find<'a, 'de> {
    field: &'a str,
    found: &'a mut Option<&'de serde_json::value::RawValue>,
}

impl<'de> DeserializeSeed<'de> for Find<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Find<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            if key == self.field {
                *self.found = Some(map.next_value()?);
                return Err(de::Error::custom("found"));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// An object's key, borrowed from the text unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(v: Value) -> Fields {
        Fields::new(v.as_object().expect("an object"))
    }

    #[test]
    fn reads_single_fields_as_the_map_holds_them() {
        let f = fields(json!({
            "title": "Plain", "quoted": "a \"b\" \\ c\u{e9}", "n": 3.5, "tags": ["x", "y"],
            "nested": {"title": "inner"}, "none": null, "we\"ird": "key"
        }));
        let map = f.to_map();
        for key in ["title", "quoted", "n", "tags", "nested", "none", "we\"ird", "absent"] {
            assert_eq!(f.get(key).as_ref(), map.get(key), "{key}");
            assert_eq!(f.get_str(key).as_deref(), map.get(key).and_then(Value::as_str), "{key}");
        }
        assert!(matches!(f.get_str("title"), Some(Cow::Borrowed("Plain"))), "plain strings are borrowed");
        assert_eq!(f.get("nested"), Some(json!({"title": "inner"})), "only the top level is searched");
    }

    #[test]
    fn equal_maps_make_equal_text_and_round_trip() {
        let a = fields(json!({"b": 1, "a": [1, {"z": 2, "y": 3}]}));
        let b = fields(json!({"a": [1, {"y": 3, "z": 2}], "b": 1}));
        assert_eq!(a, b);
        assert_eq!(a.as_json(), r#"{"a":[1,{"y":3,"z":2}],"b":1}"#);
        assert_eq!(Fields::from_stored(a.as_json().to_string()).expect("stored"), a);
        assert_eq!(serde_json::to_string(&a).expect("serializes"), a.as_json());
        assert_eq!(serde_json::from_str::<Fields>(r#"{ "b": 1, "a": [1, {"z": 2, "y": 3}] }"#).expect("parses"), a);
        assert!(Fields::default().is_empty() && Fields::default().to_map().is_empty());
        assert_eq!(Fields::default(), Fields::new(&Map::new()));
    }

    #[test]
    fn stored_text_must_be_one_object() {
        for bad in ["", "[]", "\"x\"", "{", "{\"a\":}", "{} {}"] {
            assert!(Fields::from_stored(bad.to_string()).is_err(), "{bad:?}");
        }
    }
}
