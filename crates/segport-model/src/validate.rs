//! A small walker over client JSON that collects every problem with its field path.
//!
//! Request bodies are read into `serde_json::Value` first and checked here field by field, so
//! that one 400 names every invalid field and a wrong type never turns into a framework error.

use serde_json::{Map, Value};

use crate::ids::truncate;
use crate::ValidationErrors;

pub(crate) type Object = Map<String, Value>;

/// Joins a parent path and a key: `join("filter", "segments")` is `filter.segments`.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) struct Checker {
    pub errors: ValidationErrors,
}

impl Checker {
    pub fn new() -> Self {
        Self { errors: ValidationErrors::default() }
    }

    pub fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(field, message);
    }

    fn wrong_type(&mut self, field: &str, expected: &str, got: &Value) {
        self.fail(field, format!("must be {expected}, not {}", type_name(got)));
    }

    /// The value at `key`, treating JSON `null` as absent.
    pub fn get<'a>(obj: &'a Object, key: &str) -> Option<&'a Value> {
        obj.get(key).filter(|v| !v.is_null())
    }

    pub fn object<'a>(&mut self, obj: &'a Object, key: &str, path: &str) -> Option<&'a Object> {
        let value = Self::get(obj, key)?;
        match value {
            Value::Object(o) => Some(o),
            other => {
                self.wrong_type(&join(path, key), "an object", other);
                None
            }
        }
    }

    pub fn string<'a>(&mut self, obj: &'a Object, key: &str, path: &str) -> Option<&'a str> {
        let value = Self::get(obj, key)?;
        match value {
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(&join(path, key), "a string", other);
                None
            }
        }
    }

    /// A string that must be present and non-blank.
    pub fn required_string<'a>(
        &mut self,
        obj: &'a Object,
        key: &str,
        path: &str,
    ) -> Option<&'a str> {
        match self.string(obj, key, path) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.fail(join(path, key), "must not be empty");
                None
            }
            None => {
                if Self::get(obj, key).is_none() {
                    self.fail(join(path, key), "is required");
                }
                None
            }
        }
    }

    pub fn bool(&mut self, obj: &Object, key: &str, path: &str) -> Option<bool> {
        let value = Self::get(obj, key)?;
        match value {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong_type(&join(path, key), "a boolean", other);
                None
            }
        }
    }

    pub fn array<'a>(&mut self, obj: &'a Object, key: &str, path: &str) -> Option<&'a [Value]> {
        let value = Self::get(obj, key)?;
        match value {
            Value::Array(a) => Some(a),
            other => {
                self.wrong_type(&join(path, key), "an array", other);
                None
            }
        }
    }

    /// A positive whole number: `3`, or `3.0` as AEP's examples write versions; `1.5` is not.
    pub fn positive_int(&mut self, obj: &Object, key: &str, path: &str) -> Option<i64> {
        let value = Self::get(obj, key)?;
        match whole_number(value) {
            Some(n) if n >= 1 => Some(n),
            _ => {
                if value.is_number() {
                    self.fail(join(path, key), format!("must be a positive integer, not {value}"));
                } else {
                    self.wrong_type(&join(path, key), "a positive integer", value);
                }
                None
            }
        }
    }

    /// A string parsed by `parse`, whose error message is reported under the field's path.
    pub fn parsed<T>(
        &mut self,
        obj: &Object,
        key: &str,
        path: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.string(obj, key, path)?;
        match parse(s) {
            Ok(v) => Some(v),
            Err(message) => {
                self.fail(join(path, key), message);
                None
            }
        }
    }
}

/// A JSON number that is a whole number within `i64`, whether written `3` or `3.0`.
pub(crate) fn whole_number(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        let f = value.as_f64()?;
        // Within ±2^53 every whole f64 converts exactly; beyond, the cast would saturate.
        (f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0).then_some(f as i64)
    })
}

/// One key a request body may carry: an entry of the table of keys a body accepts.
pub struct Key {
    pub name: &'static str,
    pub role: KeyRole,
}

/// What segport does with a key.
pub enum KeyRole {
    /// Read. An object value's own keys are checked against the table (empty for a scalar).
    Read(&'static [Key]),
    /// Read: an array whose object entries are checked against the table.
    ReadEach(&'static [Key]),
    /// Documented by AEP but not acted on: accepted (its value unchecked) and reported.
    Ignored,
}

impl Checker {
    /// Checks `obj`'s keys (at `path`) against `table`, recursively: an unknown key is an error
    /// naming the closest valid one, an ignored key is added to `ignored` by its path.
    pub fn known_keys(
        &mut self,
        obj: &Object,
        path: &str,
        table: &[Key],
        ignored: &mut Vec<String>,
    ) {
        for (name, value) in obj {
            let here = join(path, &truncate(name));
            let Some(key) = table.iter().find(|k| k.name == name) else {
                let names: Vec<&str> = table.iter().map(|k| k.name).collect();
                let hint = crate::suggest::hint(name, &names);
                self.fail(here, format!("unknown field `{}`{hint}", truncate(name)));
                continue;
            };
            match (&key.role, value) {
                (KeyRole::Ignored, _) => ignored.push(here),
                (KeyRole::Read(children), Value::Object(inner)) if !children.is_empty() => {
                    self.known_keys(inner, &here, children, ignored)
                }
                (KeyRole::ReadEach(children), Value::Array(entries)) => {
                    for (i, entry) in entries.iter().enumerate() {
                        if let Value::Object(inner) = entry {
                            self.known_keys(inner, &format!("{here}[{i}]"), children, ignored);
                        }
                    }
                }
                // A wrong type is reported by the field's own check.
                _ => {}
            }
        }
    }
}

/// The body as an object, or the error that says it is not one.
pub(crate) fn body_object(body: &Value) -> Result<&Object, ValidationErrors> {
    match body {
        Value::Object(o) => Ok(o),
        other => Err(ValidationErrors::single(
            "body",
            format!("must be a JSON object, not {}", type_name(other)),
        )),
    }
}
