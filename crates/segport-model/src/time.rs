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
                "{:?} is not an RFC 3339 timestamp such as 2018-01-01T00:00:00Z ({e})",
                crate::ids::truncate(text)
            )
        })?;
        Ok(Self { text: text.to_owned(), epoch_ms: parsed.timestamp_millis() })
    }

    /// Milliseconds since the Unix epoch, UTC.
    pub fn epoch_ms(&self) -> i64 {
        self.epoch_ms
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
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
}
