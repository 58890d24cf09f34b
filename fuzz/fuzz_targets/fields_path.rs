//! `fields` lists (`segport_model::fields::FieldList`) from arbitrary text.
//!
//! Never panics; an accepted list re-parses from its own string form (and from its serde string
//! form) to an equal value, and its paths re-parse from their canonical `a.b,c.d` form to the
//! same paths.

#![no_main]

use libfuzzer_sys::fuzz_target;
use segport_model::fields::{FieldList, FieldPath};

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | ':' | '$' | '-')
}

fn check(text: &str) {
    match FieldList::parse(text) {
        Ok(list) => {
            assert_eq!(list.as_str(), text, "the text is kept as given");
            assert_eq!(list.is_all(), list.paths().is_empty());
            let elements = text.split(',').map(str::trim).filter(|p| !p.is_empty()).count();
            assert_eq!(list.paths().len(), elements, "one path per non-empty element");

            let again = FieldList::parse(list.as_str()).expect("a list re-parses from its text");
            assert_eq!(again, list);

            let json = serde_json::to_string(&list).expect("a list serialises");
            let back: FieldList = serde_json::from_str(&json).expect("a list deserialises");
            assert_eq!(back, list);

            let canonical: Vec<String> =
                list.paths().iter().map(|p| p.segments().join(".")).collect();
            for (path, text) in list.paths().iter().zip(&canonical) {
                assert!(!path.segments().is_empty());
                for s in path.segments() {
                    assert!(!s.is_empty() && s.chars().all(is_path_char), "bad segment {s:?}");
                }
                assert_eq!(&FieldPath::parse(text).expect("a path re-parses"), path);
            }
            let joined = canonical.join(",");
            let canon = FieldList::parse(&joined).expect("the canonical form parses");
            assert_eq!(canon.paths(), list.paths());
        }
        Err(message) => assert!(!message.is_empty()),
    }
    // A single path too: it accepts exactly the dot-joined segments it returns.
    if let Ok(path) = FieldPath::parse(text) {
        assert_eq!(path.segments().join("."), text);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
    check(&String::from_utf8_lossy(data));
});
