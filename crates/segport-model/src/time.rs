//! RFC 3339 timestamps as clients send them: echoed exactly as given, compared in epoch ms.

use std::fmt;

use chrono::DateTime;
use serde::{Deserialize, Serialize};

/// A validated RFC 3339 timestamp that keeps the client's text for echoing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rfc3339 {
    text: String,
    epoch_ms: i64,
}

impl Rfc3339 {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parsed = DateTime::parse_from_rfc3339(text).map_err(|e| {
            format!(
                "{:?} is not an RFC 3339 timestamp such as 2018-01-01T00:00:00Z: {}",
                crate::ids::truncate(text),
                rfc3339_problem(text, &e)
            )
        })?;
        Ok(Self { text: text.to_owned(), epoch_ms: parsed.timestamp_millis() })
    }

    /// The timestamp of `epoch_ms`, written in UTC with milliseconds.
    pub fn from_ms(epoch_ms: i64) -> Self {
        let text = DateTime::from_timestamp_millis(epoch_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Self { text, epoch_ms }
    }

    /// Milliseconds since the Unix epoch, UTC.
    pub fn epoch_ms(&self) -> i64 {
        self.epoch_ms
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// What is wrong with `text` as an RFC 3339 timestamp, in words a user can act on (chrono's
/// own, "premature end of input", names no cause).
pub fn rfc3339_problem(text: &str, error: &chrono::ParseError) -> &'static str {
    use chrono::format::ParseErrorKind;
    let time = text.get(10..).unwrap_or_default();
    let has_zone = time.ends_with(['Z', 'z'])
        || time.rfind(['+', '-']).is_some_and(|i| time[i..].contains(':'));
    if text.len() > 10 && text.as_bytes()[10] == b' ' && !has_zone {
        return "join the date and the time with T and end with a time zone (Z or an offset \
                such as +02:00)";
    }
    let starts_with_date =
        text.get(..10).is_some_and(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok());
    match error.kind() {
        _ if !starts_with_date && !text.bytes().take(4).all(|b| b.is_ascii_digit()) => {
            "the date must be YYYY-MM-DD, then T, the time hh:mm:ss, and a time zone"
        }
        ParseErrorKind::TooShort if text.len() <= 10 && starts_with_date => {
            "a time of day and a time zone are needed after the date"
        }
        ParseErrorKind::TooShort => {
            "a time zone is needed at the end (Z or an offset such as +02:00)"
        }
        ParseErrorKind::OutOfRange | ParseErrorKind::Impossible => {
            "a part of the date or time is out of range"
        }
        ParseErrorKind::TooLong => "it has characters after the time zone",
        _ => "the date must be YYYY-MM-DD, then T, the time hh:mm:ss, and a time zone",
    }
}

/// The epoch milliseconds of an RFC 3339 timestamp, or what is wrong with it.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, &'static str> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| rfc3339_problem(text, &e))
}

impl fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl TryFrom<String> for Rfc3339 {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<Rfc3339> for String {
    fn from(value: Rfc3339) -> String {
        value.text
    }
}

/// The current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_text_and_compares_in_ms() {
        let a = Rfc3339::parse("2018-01-01T01:00:00+01:00").unwrap();
        let b = Rfc3339::parse("2018-01-01T00:00:00Z").unwrap();
        assert_eq!(a.epoch_ms(), b.epoch_ms());
        assert_eq!(a.as_str(), "2018-01-01T01:00:00+01:00");
        assert!(Rfc3339::parse("2018-01-01").is_err());
        assert!(Rfc3339::parse("yesterday").is_err());
    }

    /// Each common mistake gets a message that names its cause, never chrono's bare
    /// "premature end of input".
    #[test]
    fn mistakes_are_explained() {
        for (text, says) in [
            ("2018-01-01 00:00:00", "join the date and the time with T"),
            ("2018-01-01", "a time of day and a time zone are needed"),
            ("2018-01-01T00:00:00", "a time zone is needed at the end"),
            ("2018-13-01T00:00:00Z", "out of range"),
            ("2018-01-01T00:00:00Zx", "characters after the time zone"),
            ("01/02/2018", "YYYY-MM-DD"),
            ("éé", "YYYY-MM-DD"),
        ] {
            let message = Rfc3339::parse(text).unwrap_err();
            assert!(message.contains(says), "{text}: {message}");
            assert!(!message.contains("premature"), "{text}: {message}");
        }
        // A space instead of T with a zone is valid RFC 3339 (its section 5.6 note).
        assert_eq!(parse_rfc3339_ms("2018-01-01 00:00:00Z"), Ok(1_514_764_800_000));
    }
}
