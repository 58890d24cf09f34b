//! The `fields` parameter: a comma-separated list of dotted XDM paths.
//!
//! Split on `,`, whitespace trimmed, empty elements ignored; each path is segments of
//! `[A-Za-z0-9_@:$-]+` joined by `.`. The text is kept as given so that it echoes unchanged.

use serde::{Deserialize, Serialize};

/// One dotted path, such as `identities.id` or `segmentMembership.ups`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    pub fn parse(path: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        for (i, segment) in path.split('.').enumerate() {
            if segment.is_empty() {
                return Err(format!("path {path:?} has an empty segment at position {}", i + 1));
            }
            if let Some(bad) = segment.chars().find(|c| !is_path_char(*c)) {
                return Err(format!(
                    "path {path:?} contains {bad:?}; segments may hold only A-Z, a-z, 0-9, _, @, :, $ and -"
                ));
            }
            segments.push(segment.to_owned());
        }
        Ok(Self(segments))
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | ':' | '$' | '-')
}

/// A parsed `fields` list. An empty list means every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldList {
    text: String,
    paths: Vec<FieldPath>,
}

/// Longest `fields` text accepted: it is stored and echoed with every job.
const MAX_FIELDS_LEN: usize = 16 * 1024;

impl Default for FieldList {
    /// Every field.
    fn default() -> Self {
        Self { text: String::new(), paths: Vec::new() }
    }
}

impl FieldList {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_FIELDS_LEN {
            return Err(format!(
                "is {} bytes long; at most {MAX_FIELDS_LEN} are allowed",
                text.len()
            ));
        }
        let paths = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(FieldPath::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { text: text.to_owned(), paths })
    }

    pub fn paths(&self) -> &[FieldPath] {
        &self.paths
    }

    /// True when the list selects every field.
    pub fn is_all(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for FieldList {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<FieldList> for String {
    fn from(value: FieldList) -> String {
        value.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_trims_and_ignores_empty_elements() {
        let list = FieldList::parse(" identities.id, ,personalEmail.address,").unwrap();
        let paths: Vec<_> = list.paths().iter().map(|p| p.segments().join("/")).collect();
        assert_eq!(paths, ["identities/id", "personalEmail/address"]);
        assert_eq!(list.as_str(), " identities.id, ,personalEmail.address,");
        assert!(FieldList::parse(" , ").unwrap().is_all());
    }

    #[test]
    fn rejects_malformed_paths() {
        assert!(FieldList::parse("a..b").is_err());
        assert!(FieldList::parse("a.").is_err());
        assert!(FieldList::parse("a b").is_err());
        assert!(FieldList::parse("a.b[0]").is_err());
        assert!(FieldList::parse("_repo.createDate,xdm:foo,$x,a-b,@c").is_ok());
    }
}
