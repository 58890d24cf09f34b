//! Validation errors that name the offending field, collected so one answer lists all of them.

use serde::Serialize;

/// One invalid field: its dotted JSON path (or header/query name) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Longest field path an error names, in characters; a path holds client keys.
pub const MAX_FIELD_CHARS: usize = 200;
/// Longest message of one error, in characters; a message may quote client values.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Errors listed in one answer; the rest are counted in a last entry ("… and N more").
pub const MAX_DETAILS: usize = 100;

/// `text` cut to at most `max_chars` characters, the cut marked with `…` and the length of what
/// was left out: client strings are echoed in messages, never whole.
pub fn clip(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => {
            std::borrow::Cow::Owned(format!("{}… ({} more bytes)", &text[..cut], text.len() - cut))
        }
    }
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        let (field, message) = (field.into(), message.into());
        Self {
            field: clip(&field, MAX_FIELD_CHARS).into_owned(),
            message: clip(&message, MAX_MESSAGE_CHARS).into_owned(),
        }
    }
}

/// Every problem found in one piece of input. Never empty when returned as an error. At most
/// [`MAX_DETAILS`] are kept, then one entry counting the rest.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
#[error("{}", summary(.0))]
pub struct ValidationErrors(pub Vec<FieldError>, usize);

/// The field of the entry that counts errors past [`MAX_DETAILS`].
const MORE: &str = "…";

fn summary(errors: &[FieldError]) -> String {
    match errors {
        [] => "invalid input".to_owned(),
        [one] => format!("{}: {}", one.field, one.message),
        [first, rest @ ..] => {
            format!("{}: {} (and {} more invalid field(s))", first.field, first.message, rest.len())
        }
    }
}

impl ValidationErrors {
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![FieldError::new(field, message)], 0)
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        if self.0.len() < MAX_DETAILS {
            self.0.push(FieldError::new(field, message));
            return;
        }
        self.1 += 1;
        let entry = FieldError { field: MORE.to_owned(), message: format!("and {} more", self.1) };
        match self.0.get_mut(MAX_DETAILS) {
            Some(last) => *last = entry,
            None => self.0.push(entry),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was collected, the errors otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, ValidationErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// An error and its causes on one line (`outer: inner: root`), for logs and failure messages.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_capped_and_counted() {
        let mut e = ValidationErrors::default();
        for i in 0..MAX_DETAILS + 250 {
            e.push(format!("f{i}"), "bad");
        }
        assert_eq!(e.0.len(), MAX_DETAILS + 1);
        assert_eq!(e.0[MAX_DETAILS - 1].field, format!("f{}", MAX_DETAILS - 1));
        assert_eq!(
            e.0[MAX_DETAILS],
            FieldError { field: "…".into(), message: "and 250 more".into() }
        );
    }

    #[test]
    fn client_strings_are_clipped() {
        let long = "é".repeat(10_000);
        let e = FieldError::new(format!("a.{long}"), format!("unknown key {long:?}"));
        assert!(e.field.chars().count() < MAX_FIELD_CHARS + 40, "{}", e.field.len());
        assert!(e.message.chars().count() < MAX_MESSAGE_CHARS + 40);
        assert!(e.field.starts_with("a.éé") && e.field.ends_with("more bytes)"), "{}", e.field);
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdef", 3), "abc… (3 more bytes)");
    }
}
