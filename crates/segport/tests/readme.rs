//! The README is the first test: its shell blocks, from "A session with curl" to the end of the
//! walk-throughs, run in order in one shell against a fresh server in an empty directory, and
//! each answer is compared with the one the README shows. Its configuration table is compared
//! with each command's `--help`.
//!
//! The README's outputs are patterns: JSON (several values in one block allowed, after an
//! optional HTTP head) where `…` stands for any value, for any further members of an object,
//! for any further elements of an array, or for any text inside a string; ids (hex and UUIDs),
//! cursors and times match any value of their kind. Status codes, statuses, counts and error
//! codes are compared exactly.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const README: &str = include_str!("../../../README.md");
/// The tested part: from this heading to the next one that is not a walk-through.
const FIRST: &str = "## A session with curl";
const LAST: &str = "## Architecture";

/// A shell block and the output block that follows it, if any.
#[derive(Debug)]
struct Step {
    line: usize,
    script: String,
    expected: Option<String>,
}

fn steps() -> Vec<Step> {
    let start = README.find(FIRST).expect("the README has a curl session");
    let end = README[start..].find(LAST).map_or(README.len(), |e| start + e);
    let first_line = README[..start].lines().count() + 1;
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = README[start..end].lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        match info.trim() {
            "sh" => steps.push(Step { line: first_line + i, script: body, expected: None }),
            "" | "json" | "text" => {
                let last = steps.last_mut().expect("an output block follows a shell block");
                assert!(last.expected.is_none(), "two outputs for the block at line {}", last.line);
                last.expected = Some(body);
            }
            // Shown for reading, not run: other languages (a pyarrow or DuckDB snippet).
            "python" | "sql" | "toml" => {}
            other => panic!("README line {}: unexpected block kind {other:?}", first_line + i),
        }
    }
    steps
}

// ---- Patterns ----------------------------------------------------------------------------

/// A JSON value with `…` wildcards.
#[derive(Debug, Clone, PartialEq)]
enum Pat {
    Any,
    Null,
    Bool(bool),
    Number(String),
    /// Literal parts between `…`s.
    Str(Vec<String>),
    /// Members, and whether `…` allows more.
    Object(Vec<(Pat, Pat)>, bool),
    /// Elements; `Any` elements may stand for any run of elements.
    Array(Vec<Pat>),
}

struct Parser<'a> {
    text: &'a [char],
    at: usize,
}

impl Parser<'_> {
    fn skip(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_whitespace() {
            self.at += 1;
        }
    }
    fn peek(&mut self) -> Option<char> {
        self.skip();
        self.text.get(self.at).copied()
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn value(&mut self) -> Pat {
        match self.peek().unwrap_or_else(|| panic!("a value expected at {}", self.at)) {
            '…' => {
                self.at += 1;
                Pat::Any
            }
            '{' => {
                self.at += 1;
                let (mut members, mut more) = (Vec::new(), false);
                while !self.eat('}') {
                    if self.eat('…') {
                        more = true;
                    } else {
                        let key = self.value();
                        assert!(self.eat(':'), "':' expected at {}", self.at);
                        members.push((key, self.value()));
                    }
                    self.eat(',');
                }
                Pat::Object(members, more)
            }
            '[' => {
                self.at += 1;
                let mut items = Vec::new();
                while !self.eat(']') {
                    items.push(self.value());
                    self.eat(',');
                }
                Pat::Array(items)
            }
            '"' => {
                self.at += 1;
                let mut raw = String::from("\"");
                while self.text[self.at] != '"' {
                    if self.text[self.at] == '\\' {
                        raw.push(self.text[self.at]);
                        self.at += 1;
                    }
                    raw.push(self.text[self.at]);
                    self.at += 1;
                }
                self.at += 1;
                raw.push('"');
                let text: String = serde_json::from_str(&raw).expect("a JSON string");
                Pat::Str(text.split('…').map(str::to_owned).collect())
            }
            _ => {
                let start = self.at;
                while self.at < self.text.len()
                    && !matches!(self.text[self.at], ',' | '}' | ']')
                    && !self.text[self.at].is_whitespace()
                {
                    self.at += 1;
                }
                let word: String = self.text[start..self.at].iter().collect();
                match word.as_str() {
                    "null" => Pat::Null,
                    "true" => Pat::Bool(true),
                    "false" => Pat::Bool(false),
                    _ => Pat::Number(word),
                }
            }
        }
    }
}

/// Keys whose numbers are times: any number matches.
fn is_time_key(key: &str) -> bool {
    key.ends_with("Time")
        || key.ends_with("InMs")
        || matches!(key, "created" | "updated" | "completed" | "length")
}

/// Strings that are ids, cursors or generated names: any string of the same shape matches.
fn id_shape(s: &str) -> Option<&'static str> {
    let hex = |n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid = s.len() == 36 && s.split('-').map(str::len).eq([8, 4, 4, 4, 12]);
    let cursor = s.split_once('_').is_some_and(|(a, b)| {
        a.len() >= 12
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    });
    if hex(24) {
        Some("dataset id")
    } else if hex(32) {
        Some("batch id")
    } else if uuid {
        Some("uuid")
    } else if cursor {
        Some("cursor")
    } else {
        None
    }
}

/// Replaces the ids inside `s` (a path, a link) by a marker of their kind.
fn normalise_ids(s: &str) -> String {
    s.split_inclusive(['/', '=', '&', '?', ' ', '"'])
        .map(|part| {
            let (word, sep) = match part.char_indices().last() {
                Some((i, c)) if "/=&? \"".contains(c) => (&part[..i], &part[i..]),
                _ => (part, ""),
            };
            match id_shape(word) {
                Some(kind) => format!("<{kind}>{sep}"),
                None => part.to_owned(),
            }
        })
        .collect()
}

fn str_matches(parts: &[String], actual: &str) -> bool {
    if parts.len() == 1 {
        let expected = &parts[0];
        if let (Some(a), Some(b)) = (id_shape(expected), id_shape(actual)) {
            return a == b;
        }
        return expected == actual || normalise_ids(expected) == normalise_ids(actual);
    }
    let actual = normalise_ids(actual);
    let parts: Vec<String> = parts.iter().map(|p| normalise_ids(p)).collect();
    let mut rest = actual.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part.as_str()) else { return false };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part.as_str());
        } else {
            let Some(at) = rest.find(part.as_str()) else { return false };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

/// Whether `actual` matches `pat`; `key` is the member name it sits under. On a mismatch,
/// the path to it is in `why`.
fn matches(pat: &Pat, actual: &Value, key: &str, why: &mut String) -> bool {
    let ok = match (pat, actual) {
        (Pat::Any, _) => true,
        (Pat::Null, Value::Null) => true,
        (Pat::Bool(b), Value::Bool(a)) => a == b,
        (Pat::Number(_), Value::Number(_)) if is_time_key(key) => true,
        (Pat::Number(n), Value::Number(a)) => {
            n.parse::<f64>().ok() == a.as_f64() || *n == a.to_string()
        }
        (Pat::Str(parts), Value::String(a)) => str_matches(parts, a),
        (Pat::Object(members, more), Value::Object(a)) => {
            let mut used = BTreeSet::new();
            let mut ok = true;
            for (k, v) in members {
                let found = match k {
                    Pat::Str(parts) if parts.len() == 1 && id_shape(&parts[0]).is_none() => {
                        a.get_key_value(&parts[0])
                    }
                    _ => a.iter().find(|(name, value)| {
                        !used.contains(*name)
                            && matches(k, &Value::String((*name).clone()), "", &mut String::new())
                            && matches(v, value, name, &mut String::new())
                    }),
                };
                match found {
                    Some((name, value)) if matches(v, value, name, why) => {
                        used.insert(name.clone());
                    }
                    Some((name, _)) => {
                        why.insert_str(0, &format!(".{name}"));
                        ok = false;
                        break;
                    }
                    None => {
                        *why = format!(" (member {k:?} missing)");
                        ok = false;
                        break;
                    }
                }
            }
            if ok && !more && used.len() != a.len() {
                let extra: Vec<&String> = a.keys().filter(|k| !used.contains(*k)).collect();
                *why = format!(" (members {extra:?} not shown; add …)");
                ok = false;
            }
            return ok;
        }
        (Pat::Array(items), Value::Array(a)) => array_matches(items, a, why),
        _ => false,
    };
    if !ok && why.is_empty() {
        *why = format!(" (expected {pat:?}, got {actual})");
    }
    ok
}

fn array_matches(items: &[Pat], actual: &[Value], why: &mut String) -> bool {
    match items.split_first() {
        None => actual.is_empty(),
        Some((Pat::Any, rest)) => {
            (0..=actual.len()).any(|skip| array_matches(rest, &actual[skip..], &mut String::new()))
        }
        Some((first, rest)) => {
            !actual.is_empty()
                && matches(first, &actual[0], "", why)
                && array_matches(rest, &actual[1..], why)
        }
    }
}

/// Compares a step's output with the README's: an optional HTTP head (status line exact, the
/// headers shown present with matching values), then the JSON values or plain lines.
fn compare(step: &Step, expected: &str, actual: &str) {
    let at = format!("README line {}", step.line);
    let (mut exp, mut act) = (expected.trim_start(), actual.trim_start());
    if exp.starts_with("HTTP/") {
        let (exp_head, exp_rest) = exp.split_once("\n\n").unwrap_or((exp, ""));
        let (act_head, act_rest) =
            act.split_once("\r\n\r\n").or_else(|| act.split_once("\n\n")).unwrap_or((act, ""));
        let mut exp_lines = exp_head.lines();
        let mut act_lines = act_head.lines().map(str::trim_end);
        assert_eq!(exp_lines.next(), act_lines.next(), "{at}: status line");
        let headers: BTreeMap<String, String> = act_lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        for line in exp_lines.filter(|l| l.trim() != "…") {
            let (k, v) = line.split_once(':').unwrap_or_else(|| panic!("{at}: header {line:?}"));
            let got = headers.get(&k.trim().to_ascii_lowercase());
            let parts: Vec<String> = v.trim().split('…').map(str::to_owned).collect();
            assert!(
                got.is_some_and(|g| str_matches(&parts, g)),
                "{at}: header {k}: expected {v:?}, got {got:?}"
            );
        }
        (exp, act) = (exp_rest.trim_start(), act_rest.trim_start());
    }
    if exp.starts_with(['{', '[']) {
        let chars: Vec<char> = exp.chars().collect();
        let mut parser = Parser { text: &chars, at: 0 };
        let mut values = serde_json::Deserializer::from_str(act).into_iter::<Value>();
        while parser.peek().is_some() {
            let pat = parser.value();
            let value = values
                .next()
                .unwrap_or_else(|| panic!("{at}: fewer answers than shown:\n{actual}"))
                .unwrap_or_else(|e| panic!("{at}: not JSON ({e}):\n{actual}"));
            let mut why = String::new();
            assert!(
                matches(&pat, &value, "", &mut why),
                "{at}: the answer differs at ${why}\nREADME:\n{expected}\nactual:\n{value:#}"
            );
        }
        assert!(values.next().is_none(), "{at}: more answers than shown:\n{actual}");
    } else {
        let exp_lines: Vec<&str> = exp.lines().filter(|l| !l.trim().is_empty()).collect();
        let act_lines: Vec<&str> = act.lines().filter(|l| !l.trim().is_empty()).collect();
        let shown: Vec<&str> = exp_lines.iter().copied().filter(|l| l.trim() != "…").collect();
        let ellided = shown.len() != exp_lines.len();
        let mut next = 0;
        for line in &shown {
            let parts: Vec<String> = line.trim().split('…').map(str::to_owned).collect();
            let found = act_lines[next..].iter().position(|a| str_matches(&parts, a.trim()));
            match found {
                Some(i) if ellided || i == 0 => next += i + 1,
                _ => panic!("{at}: line {line:?} not in the output:\n{actual}"),
            }
        }
        assert!(ellided || next == act_lines.len(), "{at}: more output than shown:\n{actual}");
    }
}

// ---- Running ----------------------------------------------------------------------------

#[test]
fn the_readme_session_runs_as_written() {
    let dir = TempDir::new();
    let bin = env!("CARGO_BIN_EXE_segport");
    let server = Server::start(&dir.0, &[], &[]);
    let steps = steps();
    assert!(steps.len() >= 10, "found only {} shell blocks", steps.len());
    let mut shell = Command::new("bash")
        .current_dir(&dir.0)
        .env("SEGPORT", format!("http://{}", server.addr))
        .env_remove("SEGPORT_SERVER")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = shell.stdin.take().unwrap();
    // The README runs the binary with cargo; here it is the one the tests built.
    writeln!(
        input,
        "set -u\ncargo() {{ while [[ $# -gt 0 && $1 != -- ]]; do shift; done; shift; {bin} \"$@\"; }}"
    )
    .unwrap();
    for (i, step) in steps.iter().enumerate() {
        writeln!(input, "{}\nprintf '\\n@@step {i} done@@\\n'", step.script).unwrap();
    }
    drop(input);
    let out = shell.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut outputs = Vec::new();
    let mut rest = stdout.as_str();
    for i in 0..steps.len() {
        let marker = format!("\n@@step {i} done@@\n");
        let (before, after) = rest
            .split_once(&marker)
            .unwrap_or_else(|| panic!("step {i} did not finish:\n{rest}\nstderr:\n{stderr}"));
        outputs.push(before.to_owned());
        rest = after;
    }
    // For writing the README: every answer as it came, to a file, instead of comparing.
    if let Ok(path) = std::env::var("SEGPORT_README_DUMP") {
        let dump: String = steps
            .iter()
            .zip(&outputs)
            .map(|(s, o)| format!("==== README line {}\n{o}\n", s.line))
            .collect();
        std::fs::write(path, dump).unwrap();
        return;
    }
    for (step, output) in steps.iter().zip(&outputs) {
        if let Some(expected) = &step.expected {
            compare(step, expected, output);
        }
    }
    drop(server);
}

/// The README's configuration table names, for each flag, the commands that take it; each
/// command's `--help` must list exactly those flags.
#[test]
fn the_configuration_table_matches_every_help() {
    let start = README.find("## Configuration reference").unwrap();
    let end = start + README[start..][1..].find("\n## ").unwrap();
    let mut table: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let commands =
        ["serve", "migrate", "token create", "token list", "token revoke", "generate", "ingest"];
    for row in README[start..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let flags: Vec<String> =
            cells[0].split('`').filter(|c| c.starts_with("--")).map(str::to_owned).collect();
        let applies = cells[3];
        for command in commands {
            let named = applies.contains(&format!("`{command}`"))
                || (command.starts_with("token ") && applies.contains("`token`"))
                || applies.contains("all commands");
            if named {
                table.entry(command).or_default().extend(flags.iter().cloned());
            }
        }
    }
    let dir = TempDir::new();
    for command in commands {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let out = run(&dir.0, &args, &[]);
        let help = String::from_utf8_lossy(&out.stdout);
        let flags: BTreeSet<String> = help
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned())
            .filter(|w| w != "--help" && w != "--version")
            .collect();
        let listed = table.get(command).cloned().unwrap_or_default();
        assert_eq!(listed, flags, "`segport {command}`: README table vs --help");
    }
}

#[test]
fn patterns_match_as_documented() {
    let pat = |s: &str| {
        let chars: Vec<char> = s.chars().collect();
        Parser { text: &chars, at: 0 }.value()
    };
    let yes = |p: &str, v: Value| assert!(matches(&pat(p), &v, "", &mut String::new()), "{p} {v}");
    let no = |p: &str, v: Value| assert!(!matches(&pat(p), &v, "", &mut String::new()), "{p} {v}");
    use serde_json::json;
    yes(r#"{"a": 1, …}"#, json!({"a": 1, "b": 2}));
    no(r#"{"a": 1}"#, json!({"a": 1, "b": 2}));
    no(r#"{"a": 2, …}"#, json!({"a": 1}));
    yes(r#"{"a": {…}}"#, json!({"a": {"x": 1}}));
    yes(r#"[{"id": 3, …}, …]"#, json!([{"id": 3, "s": 1}, {"id": 2}]));
    no(r#"[{"id": 3, …}]"#, json!([{"id": 3}, {"id": 2}]));
    no(r#"{"t": 1795848358943}"#, json!({"t": 1}));
    yes(r#"{"creationTime": 1795848358943}"#, json!({"creationTime": 17}));
    no(r#"{"count": 3}"#, json!({"count": 4}));
    yes(r#""b1341160b830496bad9e2941""#, json!("00000000000000000000000a"));
    no(r#""b1341160b830496bad9e2941""#, json!("0000000000000000000000000000000a"));
    yes(r#""3c0f7e2a-…""#, json!("3c0f7e2a-1234"));
    yes(
        r#"{"…": {"status": "success", …}}"#,
        json!({"0123456789abcdef0123456789abcdef": {"status": "success", "x": 1}}),
    );
    no(
        r#"{"…": {"status": "success", …}}"#,
        json!({"0123456789abcdef0123456789abcdef": {"status": "failed"}}),
    );
    yes(
        r#""/export/jobs/?limit=2&offset=1795848358969_2""#,
        json!("/export/jobs/?limit=2&offset=1795848399999_2"),
    );
}
