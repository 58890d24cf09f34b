//! JSON Patch (RFC 6902) as the PATCH routes take it: `add`, `replace` and `remove` on the few
//! paths a resource lets change, applied to the resource's JSON all or nothing. The result is
//! then checked by the resource's own rules, as a replacement would be.

use serde_json::Value;

use crate::ids::truncate;
use crate::validate::Checker;
use crate::ValidationErrors;

/// Operations one PATCH may carry.
pub const MAX_OPS: usize = 100;

/// Which paths a resource lets a patch change.
pub struct Paths<'a> {
    /// Each as its segments; `*` stands for any one segment (a tag's name).
    pub allowed: &'a [&'a [&'a str]],
    /// Named in the error for any other path.
    pub hint: &'a str,
    /// Adobe's merge-policy examples write `/identityGraph.type`: dots separate segments too.
    pub dotted: bool,
    /// Whether `remove` is allowed (schedules take `add` and `replace` only).
    pub remove: bool,
}

/// Applies `ops` to `doc`, or answers every invalid operation.
pub fn apply(doc: &mut Value, ops: &[Value], paths: &Paths<'_>) -> Result<(), ValidationErrors> {
    if ops.len() > MAX_OPS {
        return Err(ValidationErrors::single(
            "body",
            format!("holds {} operations; at most {MAX_OPS} are allowed", ops.len()),
        ));
    }
    let mut c = Checker::new();
    for (i, op) in ops.iter().enumerate() {
        let at = format!("body[{i}]");
        let (Some(kind), Some(path)) =
            (op.get("op").and_then(Value::as_str), op.get("path").and_then(Value::as_str))
        else {
            c.fail(at, "must be an object with op and path");
            continue;
        };
        let Some(segments) = segments_of(path, paths).filter(|s| !s.is_empty()) else {
            c.fail(
                format!("{at}.path"),
                format!("{:?} cannot be changed; use {}", truncate(path), paths.hint),
            );
            continue;
        };
        let Some((last, parents)) = segments.split_last() else { continue };
        let parent = parents.iter().try_fold(&mut *doc, |v, s| v.get_mut(s.as_str()));
        let Some(parent) = parent.and_then(Value::as_object_mut) else {
            c.fail(format!("{at}.path"), format!("{:?} does not exist", truncate(path)));
            continue;
        };
        match (kind, op.get("value")) {
            ("add" | "replace", Some(value)) => {
                if kind == "replace" && !parent.contains_key(last) {
                    c.fail(format!("{at}.path"), format!("{:?} does not exist", truncate(path)));
                } else {
                    parent.insert(last.clone(), value.clone());
                }
            }
            ("add" | "replace", None) => c.fail(format!("{at}.value"), "is required"),
            ("remove", _) if !paths.remove => c.fail(
                format!("{at}.op"),
                format!("{:?} is not supported here; use add or replace", truncate(kind)),
            ),
            ("remove", _) => {
                if parent.remove(last).is_none() {
                    c.fail(format!("{at}.path"), format!("{:?} does not exist", truncate(path)));
                }
            }
            (other, _) => c.fail(
                format!("{at}.op"),
                format!("{:?} is not supported; use add, replace or remove", truncate(other)),
            ),
        }
    }
    c.errors.into_result(())
}

/// The segments of a JSON pointer (`~1` for `/`, `~0` for `~`), when it is an allowed path.
fn segments_of(path: &str, paths: &Paths<'_>) -> Option<Vec<String>> {
    let rest = path.strip_prefix('/')?;
    let segments: Vec<String> = rest
        .split('/')
        .flat_map(|s| {
            let parts: Vec<&str> = if paths.dotted { s.split('.').collect() } else { vec![s] };
            parts.into_iter().map(|p| p.replace("~1", "/").replace("~0", "~"))
        })
        .collect();
    let allowed = paths.allowed.iter().any(|a| {
        a.len() == segments.len()
            && a.iter().zip(&segments).all(|(x, s)| (*x == "*" && !s.is_empty()) || x == s)
    });
    allowed.then_some(segments)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const PATHS: Paths<'static> = Paths {
        allowed: &[&["name"], &["tags", "*"], &["graph", "type"]],
        hint: "/name",
        dotted: true,
        remove: true,
    };

    #[test]
    fn operations_apply_all_or_report_each() {
        let mut doc = json!({"name": "a", "tags": {"x": ["1"]}, "graph": {"type": "none"}});
        let ops = [
            json!({"op": "replace", "path": "/name", "value": "b"}),
            json!({"op": "add", "path": "/tags/a~1b", "value": ["2"]}),
            json!({"op": "remove", "path": "/tags/x"}),
            json!({"op": "add", "path": "/graph.type", "value": "pdg"}),
        ];
        apply(&mut doc, &ops, &PATHS).unwrap();
        assert_eq!(doc, json!({"name": "b", "tags": {"a/b": ["2"]}, "graph": {"type": "pdg"}}));
        let bad = [
            json!({"op": "move", "path": "/name"}),
            json!({"op": "add", "path": "/other", "value": 1}),
            json!({"op": "remove", "path": "/tags/nope"}),
            json!({"op": "add", "path": "name", "value": 1}),
            json!("x"),
        ];
        let errors = apply(&mut doc, &bad, &PATHS).unwrap_err();
        let fields: Vec<String> = errors.0.into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["body[0].op", "body[1].path", "body[2].path", "body[3].path", "body[4]"]
        );
    }
}
