//! "Did you mean …?": the closest of a set of valid names to one a client misspelled, so that an
//! error about an unknown key or field path can point at the one that was probably meant.

/// The candidate closest to `given`, when one is close enough to be a plausible misspelling:
/// equal ignoring case, or within an edit distance of about a third of its length (at least 2).
pub fn closest<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = given.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(distance, c)| *distance <= (c.chars().count() / 3).max(2))
        .min_by_key(|(distance, c)| (*distance, c.len()))
        .map(|(_, c)| c)
}

/// `; did you mean `x`?` for the closest candidate, or `; valid here: a, b, c` when none is close.
pub fn hint(given: &str, candidates: &[&str]) -> String {
    match closest(given, candidates.iter().copied()) {
        Some(c) => format!("; did you mean `{c}`?"),
        None => format!("; valid here: {}", candidates.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_near_name_is_suggested_and_a_far_one_is_not() {
        let keys = ["filter", "fields", "destination", "schema"];
        assert_eq!(closest("filters", keys), Some("filter"));
        assert_eq!(closest("Destination", keys), Some("destination"));
        assert_eq!(closest("feilds", keys), Some("fields"));
        assert_eq!(closest("mergePolicy", keys), None);
        assert_eq!(hint("zzz", &["a", "b"]), "; valid here: a, b");
        assert_eq!(hint("filtr", &keys), "; did you mean `filter`?");
    }
}
