//! A small walker over client JSON that collects every problem with its field path.
//!
//! Request bodies are read into `serde_json::Value` first and checked here field by field, so
//! that one 400 names every invalid field and a wrong type never turns into a framework error.

use serde_json::{Map, Value};

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

    /// A positive integer (JSON number without fraction).
    pub fn positive_int(&mut self, obj: &Object, key: &str, path: &str) -> Option<i64> {
        let value = Self::get(obj, key)?;
        match value.as_i64() {
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
