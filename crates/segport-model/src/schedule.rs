//! Schedules (`/config/schedules`): the body clients send, checked in shape; the Quartz cron
//! expression a schedule fires on; and the schedule as the catalog keeps it and the API shows it.
//!
//! The export body a schedule of type `export` carries is only checked in shape here; the API
//! checks it against the sandbox (dataset, merge policy, fields) as a job create does, at
//! creation and again at every run.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::ids::truncate;
use crate::validate::{join, Checker, Object};
use crate::ValidationErrors;

/// Longest schedule name, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest cron expression, in characters.
pub const MAX_CRON_CHARS: usize = 256;
/// Schedules one sandbox may hold.
pub const MAX_SCHEDULES_PER_SANDBOX: u64 = 1_000;
/// Earlier due times counted into one catch-up run at most; beyond, the count says "at least".
pub const MAX_CAUGHT_UP: i64 = 10_000;

/// Whether a schedule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleState {
    Active,
    Inactive,
}

impl ScheduleState {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleState::Active => "active",
            ScheduleState::Inactive => "inactive",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "active" => Ok(ScheduleState::Active),
            "inactive" => Ok(ScheduleState::Inactive),
            other => Err(format!("{:?} is not a state; use active or inactive", truncate(other))),
        }
    }
}

/// The fields of a Quartz expression, in order, as errors name them.
const FIELD_NAMES: [&str; 7] =
    ["seconds", "minutes", "hours", "day-of-month", "month", "day-of-week", "year"];

/// A field's neutral value, against which each field of an expression is checked on its own.
const NEUTRAL: [&str; 7] = ["0", "0", "0", "?", "*", "*", "*"];

/// A Quartz cron expression, in UTC: seconds, minutes, hours, day-of-month, month, day-of-week
/// and an optional year; `?` in one of day-of-month and day-of-week; `L`, `W`, `LW` and `#`
/// as Quartz has them; days of the week numbered from 1 = Sunday.
#[derive(Clone)]
pub struct QuartzCron {
    text: String,
    cron: croner::Cron,
}

impl std::fmt::Debug for QuartzCron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Optional)
        // Quartz numbers the days of the week from 1 = Sunday to 7 = Saturday.
        .alternative_weekdays(true)
        // Quartz writes steps from a start as `0/15`.
        .sloppy_ranges(true)
        .build()
}

impl QuartzCron {
    /// Parses `text`, or says which field is wrong and why.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.chars().count() > MAX_CRON_CHARS {
            return Err(format!("is longer than {MAX_CRON_CHARS} characters"));
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        if !(6..=7).contains(&fields.len()) {
            return Err(format!(
                "{:?} has {} field(s); a Quartz cron expression has 6 or 7: seconds, minutes, \
                 hours, day-of-month, month, day-of-week and an optional year, e.g. \
                 \"0 30 13 * * ?\" (every day at 13:30 UTC)",
                truncate(text),
                fields.len()
            ));
        }
        for (i, field) in fields.iter().enumerate() {
            if field.contains('?') && i != 3 && i != 5 {
                return Err(format!(
                    "{} field {:?}: `?` stands only in day-of-month or day-of-week",
                    FIELD_NAMES[i],
                    truncate(field)
                ));
            }
        }
        let (dom, dow) = (fields[3], fields[5]);
        if dom == "?" && dow == "?" {
            return Err("`?` stands in both day-of-month and day-of-week; give one of them a \
                        value (or `*`)"
                .to_owned());
        }
        let open = |f: &str| f == "?" || f == "*";
        if !open(dom) && !open(dow) {
            return Err(format!(
                "day-of-month {:?} and day-of-week {:?} are both set; as in Quartz, one of them \
                 must be `?`",
                truncate(dom),
                truncate(dow)
            ));
        }
        // Each field on its own, the others neutral: the error names the part that is wrong.
        let parser = parser();
        for (i, field) in fields.iter().enumerate() {
            let mut probe: Vec<&str> = NEUTRAL[..fields.len()].to_vec();
            probe[i] = field;
            if i == 5 {
                probe[3] = "?";
                probe[5] = if *field == "?" { "*" } else { field };
            }
            if let Err(e) = parser.parse(&probe.join(" ")) {
                return Err(format!("{} field {:?}: {}", FIELD_NAMES[i], truncate(field), e));
            }
        }
        let cron = parser.parse(text).map_err(|e| format!("{:?}: {e}", truncate(text)))?;
        Ok(Self { text: text.to_owned(), cron })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time the expression fires strictly after `after_ms`, in ms; `None` when it
    /// never fires again (a year in the past, the 30th of February).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let mut from: DateTime<Utc> = DateTime::from_timestamp_millis(after_ms)?;
        // The search works in whole seconds; a result at or before `after_ms` (its fraction
        // cut) moves the search on.
        for _ in 0..2 {
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            if next.timestamp_millis() > after_ms {
                return Some(next.timestamp_millis());
            }
            from = next;
        }
        None
    }

    /// The latest time the expression fires at or before `at_ms`, and how many earlier times
    /// after `since_ms` (exclusive) it skips, counted up to [`MAX_CAUGHT_UP`]. `None` when it
    /// fires in neither.
    pub fn latest_due(&self, since_ms: i64, at_ms: i64) -> Option<(i64, i64)> {
        let mut latest = None;
        let mut skipped = -1;
        let mut t = since_ms - 1;
        while let Some(next) = self.next_after(t).filter(|n| *n <= at_ms) {
            latest = Some(next);
            skipped += 1;
            t = next;
            if skipped >= MAX_CAUGHT_UP {
                // Jump to the last time before `at_ms` without counting the rest.
                let at: DateTime<Utc> = DateTime::from_timestamp_millis(at_ms)?;
                let last = self.cron.find_previous_occurrence(&at, true).ok()?;
                latest = Some(last.timestamp_millis().max(next));
                break;
            }
        }
        latest.map(|l| (l, skipped.max(0)))
    }
}

/// The type of a schedule. Only `export` runs; `batch_segmentation` waits for segment
/// evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleType {
    Export,
}

impl ScheduleType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleType::Export => "export",
        }
    }
}

/// What a client sets of a schedule, checked in shape: a create's body, or a schedule's
/// [`to_document`](Self::to_document) after a patch.
#[derive(Debug, Clone)]
pub struct ScheduleBody {
    pub name: String,
    pub kind: ScheduleType,
    /// `properties.exportJob`: an export job body, as `POST /export/jobs` takes it.
    pub export_job: Value,
    /// `properties.delta`: each run exports only what changed since the last successful one.
    pub delta: bool,
    pub cron: QuartzCron,
    pub state: ScheduleState,
}

const TOP_KEYS: &[&str] = &["name", "type", "properties", "schedule", "state"];
const PROPERTY_KEYS: &[&str] = &["exportJob", "delta"];

fn unknown_keys(c: &mut Checker, obj: &Object, path: &str, known: &[&str]) {
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            let hint = crate::suggest::hint(key, known);
            c.fail(join(path, &truncate(key)), format!("unknown field `{}`{hint}", truncate(key)));
        }
    }
}

impl ScheduleBody {
    /// Checks a create's body (or a patched document): every problem in one answer.
    pub fn parse(body: &Value) -> Result<Self, ValidationErrors> {
        let mut c = Checker::new();
        let Some(obj) = body.as_object() else {
            return Err(ValidationErrors::single(
                "body",
                "must be a JSON object with name, type, properties, schedule and state",
            ));
        };
        unknown_keys(&mut c, obj, "", TOP_KEYS);
        let name = c.required_string(obj, "name", "").map(str::trim).map(str::to_owned);
        if name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME_CHARS) {
            c.fail("name", format!("is longer than {MAX_NAME_CHARS} characters"));
        }
        let kind = match c.required_string(obj, "type", "") {
            Some("export") => Some(ScheduleType::Export),
            Some("batch_segmentation") => {
                c.fail(
                    "type",
                    "batch_segmentation is not supported: segport does not evaluate segments \
                     (memberships come with the profiles); use export",
                );
                None
            }
            Some(other) => {
                c.fail("type", format!("{:?} is not a schedule type; use export", truncate(other)));
                None
            }
            None => None,
        };
        let cron = match c.required_string(obj, "schedule", "") {
            Some(text) => match QuartzCron::parse(text) {
                Ok(cron) => Some(cron),
                Err(message) => {
                    c.fail("schedule", message);
                    None
                }
            },
            None => None,
        };
        let state =
            c.parsed(obj, "state", "", ScheduleState::parse).unwrap_or(ScheduleState::Inactive);
        let mut export_job = None;
        let mut delta = false;
        match Checker::get(obj, "properties") {
            None => c.fail("properties", "is required (properties.exportJob holds the job body)"),
            Some(Value::Object(props)) => {
                unknown_keys(&mut c, props, "properties", PROPERTY_KEYS);
                match Checker::get(props, "exportJob") {
                    Some(job @ Value::Object(_)) => export_job = Some(job.clone()),
                    Some(_) => c.fail(
                        "properties.exportJob",
                        "must be an object: an export job body as POST /export/jobs takes it",
                    ),
                    None if kind == Some(ScheduleType::Export) => c.fail(
                        "properties.exportJob",
                        "is required for type export: the export job body each run creates",
                    ),
                    None => {}
                }
                delta = c.bool(props, "delta", "properties").unwrap_or(false);
            }
            Some(_) => c.fail("properties", "must be an object"),
        }
        let (Some(name), Some(kind), Some(cron), Some(export_job)) = (name, kind, cron, export_job)
        else {
            if c.errors.is_empty() {
                c.fail("body", "is incomplete");
            }
            return Err(c.errors);
        };
        c.errors.into_result(Self { name, kind, export_job, delta, cron, state })
    }

    /// `properties` as stored and shown.
    pub fn properties(&self) -> Value {
        json!({"exportJob": self.export_job, "delta": self.delta})
    }

    /// The fields a patch may change, as a JSON document the patch applies to.
    pub fn to_document(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind.as_str(),
            "properties": self.properties(),
            "schedule": self.cron.as_str(),
            "state": self.state.as_str(),
        })
    }
}

/// A schedule as the catalog keeps it.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: String,
    pub org: String,
    pub sandbox: String,
    pub body: ScheduleBody,
    /// The next due time the scheduler fires; `None` while inactive or when none is left.
    pub next_due_ms: Option<i64>,
    /// The last due time fired, and the job it made (none when it was missed).
    pub last_due_ms: Option<i64>,
    pub last_job_id: Option<i64>,
    /// Due times skipped because the previous run was still in flight.
    pub missed: i64,
    /// The ingest time up to which a delta schedule has exported, and the key of the body and
    /// merge policy that export ran with.
    pub delta_mark_ms: Option<i64>,
    pub delta_key: Option<String>,
    pub create_ms: i64,
    pub update_ms: i64,
}

impl Schedule {
    /// The schedule as the API answers it: AEP's fields (epochs in seconds), then segport's
    /// additions (times in ms).
    pub fn to_wire(&self) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), json!(self.id));
        out.insert("imsOrgId".into(), json!(self.org));
        out.insert("sandbox".into(), json!({"sandboxName": self.sandbox}));
        if let Value::Object(body) = self.body.to_document() {
            out.extend(body);
        }
        out.insert("createEpoch".into(), json!(self.create_ms.div_euclid(1000)));
        out.insert("updateEpoch".into(), json!(self.update_ms.div_euclid(1000)));
        out.insert("nextDueTime".into(), json!(self.next_due_ms));
        out.insert("lastDueTime".into(), json!(self.last_due_ms));
        out.insert("lastJobId".into(), json!(self.last_job_id));
        out.insert("missedCount".into(), json!(self.missed));
        Value::Object(out)
    }
}

/// What became of one due time of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// A job was created (it may have failed at once when its body no longer resolved).
    Created,
    /// Skipped: the previous run was still NEW or PROCESSING.
    Missed,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Created => "created",
            RunOutcome::Missed => "missed",
        }
    }
}

/// One fired due time of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRun {
    pub due_ms: i64,
    pub outcome: RunOutcome,
    pub job_id: Option<i64>,
    /// Earlier due times folded into this one because no scheduler ran at them.
    pub caught_up: i64,
    pub fired_ms: i64,
}

impl ScheduleRun {
    pub fn to_wire(&self) -> Value {
        json!({
            "dueTime": self.due_ms,
            "outcome": self.outcome.as_str(),
            "jobId": self.job_id,
            "caughtUp": self.caught_up,
            "firedTime": self.fired_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    #[test]
    fn daily_at_half_past_one_utc() {
        let cron = QuartzCron::parse("0 30 13 * * ?").unwrap();
        assert_eq!(cron.next_after(ms("2026-12-06T00:00:00Z")), Some(ms("2026-12-06T13:30:00Z")));
        // Strictly after: at the due time itself, the next day's.
        assert_eq!(cron.next_after(ms("2026-12-06T13:30:00Z")), Some(ms("2026-12-07T13:30:00Z")));
        assert_eq!(
            cron.next_after(ms("2026-12-06T13:29:59.999Z")),
            Some(ms("2026-12-06T13:30:00Z"))
        );
    }

    #[test]
    fn quartz_specials() {
        let after = ms("2026-12-06T00:00:00Z");
        for (text, next) in [
            ("0 0 12 ? * 2#1", "2026-12-07T12:00:00Z"), // first Monday (1 = Sunday)
            ("0 0 12 L * ?", "2026-12-31T12:00:00Z"),
            ("0 0 12 15W * ?", "2026-12-15T12:00:00Z"),
            ("0 0 12 ? * 6L", "2026-12-25T12:00:00Z"), // last Friday
            ("0 0 12 * * ? 2030", "2030-01-01T12:00:00Z"),
            ("0 0/15 * * * ?", "2026-12-06T00:15:00Z"),
            ("0 0 12 ? * MON-FRI", "2026-12-07T12:00:00Z"),
        ] {
            let cron = QuartzCron::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(cron.next_after(after), Some(ms(next)), "{text}");
        }
        // Parses, but never fires again.
        assert_eq!(QuartzCron::parse("0 0 12 * * ? 2001").unwrap().next_after(after), None);
    }

    #[test]
    fn errors_name_the_part() {
        for (text, says) in [
            ("0 61 * * * ?", "minutes field \"61\""),
            ("0 0 25 * * ?", "hours field \"25\""),
            ("0 0 12 ? * 0", "day-of-week field \"0\""),
            ("0 0 12 32 * ?", "day-of-month field \"32\""),
            ("0 0 12 * 13 ?", "month field \"13\""),
            ("0 12 * * ?", "5 field(s)"),
            ("0 0 12 15 * 2", "both set"),
            ("0 0 12 ? * ?", "both day-of-month and day-of-week"),
            ("? 0 12 * * ?", "seconds field"),
            ("0 0 12 L-3 * ?", "day-of-month field \"L-3\""),
            ("0 0 12 * * ? 20x0", "year field"),
        ] {
            let message = QuartzCron::parse(text).unwrap_err();
            assert!(message.contains(says), "{text}: {message}");
        }
    }

    #[test]
    fn catch_up_takes_the_latest_due_time_and_counts_the_rest() {
        let cron = QuartzCron::parse("0 0 * * * ?").unwrap(); // hourly
        let since = ms("2026-12-06T10:00:00Z");
        let (latest, skipped) = cron.latest_due(since, ms("2026-12-06T13:20:00Z")).unwrap();
        assert_eq!(latest, ms("2026-12-06T13:00:00Z"));
        assert_eq!(skipped, 3); // 10:00, 11:00, 12:00
        assert_eq!(cron.latest_due(since, ms("2026-12-06T10:00:00Z")), Some((since, 0)));
        assert_eq!(cron.latest_due(since, ms("2026-12-06T09:59:59Z")), None);
        // Past the count's bound, the latest time still comes back.
        let every_second = QuartzCron::parse("* * * * * ?").unwrap();
        let (latest, skipped) =
            every_second.latest_due(since, since + 1_000 * (MAX_CAUGHT_UP + 50)).unwrap();
        assert_eq!(latest, since + 1_000 * (MAX_CAUGHT_UP + 50));
        assert_eq!(skipped, MAX_CAUGHT_UP);
    }

    #[test]
    fn bodies_are_checked_whole() {
        let ok = json!({"name": " nightly ", "type": "export", "schedule": "0 30 13 * * ?",
            "properties": {"exportJob": {"destination": {"datasetId": "x"}}}});
        let body = ScheduleBody::parse(&ok).unwrap();
        assert_eq!(body.name, "nightly");
        assert_eq!(body.state, ScheduleState::Inactive);
        assert!(!body.delta);
        let again = ScheduleBody::parse(&body.to_document()).unwrap();
        assert_eq!(again.to_document(), body.to_document());

        let bad = json!({"name": "", "type": "batch_segmentation", "schedule": "0 61 * * * ?",
            "state": "on", "properties": {"delta": "yes", "segments": ["*"]}, "extra": 1});
        let fields: Vec<String> =
            ScheduleBody::parse(&bad).unwrap_err().0.into_iter().map(|e| e.field).collect();
        for field in [
            "extra",
            "name",
            "type",
            "schedule",
            "state",
            "properties.segments",
            "properties.delta",
        ] {
            assert!(fields.iter().any(|f| f == field), "{field} not in {fields:?}");
        }
        // Past the limits: a name over 256 characters, an expression over 256.
        let long = json!({"name": "n".repeat(MAX_NAME_CHARS + 1), "type": "export",
            "schedule": format!("0 0 12 * * ? {}", "1,".repeat(200)),
            "properties": {"exportJob": {}}});
        let fields: Vec<String> =
            ScheduleBody::parse(&long).unwrap_err().0.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "schedule"]);
        let missing = ScheduleBody::parse(&json!({"name": "x", "type": "export",
            "schedule": "0 0 1 * * ?", "properties": {}}))
        .unwrap_err();
        assert_eq!(missing.0[0].field, "properties.exportJob");
    }
}
