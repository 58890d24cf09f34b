//! How the store names files under the storage root: a data file (`….parquet`) and the
//! companions derived from it beside it, its membership index (`….members.arrow`, earlier
//! `….members.parquet`) and its row file (`….rows.arrow`). One place for these rules: the
//! writers, the readers, deletion and the sweep all ask here.

const DATA_SUFFIX: &str = ".parquet";
const INDEX_SUFFIX: &str = ".members.arrow";
const LEGACY_INDEX_SUFFIX: &str = ".members.parquet";
const ROWS_SUFFIX: &str = ".rows.arrow";

/// The stem of a data file path, `None` for a path that is not a data file.
fn data_stem(data: &str) -> Option<&str> {
    if data.ends_with(LEGACY_INDEX_SUFFIX) {
        return None;
    }
    data.strip_suffix(DATA_SUFFIX)
}

/// The index path of the data file at `data`, `None` for a path that is not a data file.
pub fn index_path(data: &str) -> Option<String> {
    data_stem(data).map(|stem| format!("{stem}{INDEX_SUFFIX}"))
}

/// Where an earlier version kept the index of `data`, as Parquet (removed with its data file).
pub fn legacy_index_path(data: &str) -> Option<String> {
    data_stem(data).map(|stem| format!("{stem}{LEGACY_INDEX_SUFFIX}"))
}

/// The row file path of the data file at `data`, `None` for a path that is not a data file.
pub fn rows_path(data: &str) -> Option<String> {
    data_stem(data).map(|stem| format!("{stem}{ROWS_SUFFIX}"))
}

/// The companion files a store data file at `data` has: its membership index and its row file.
pub fn companions(data: &str) -> Vec<String> {
    [index_path(data), rows_path(data)].into_iter().flatten().collect()
}

/// Every companion a store data file at `data` may have, with those of earlier versions.
pub(crate) fn all_companions(data: &str) -> Vec<String> {
    let mut all = companions(data);
    all.extend(legacy_index_path(data));
    all
}

/// The data file of a companion file at `path` (an index of either format, or a row file),
/// `None` when `path` is not a companion.
pub fn companion_data(path: &str) -> Option<String> {
    [INDEX_SUFFIX, LEGACY_INDEX_SUFFIX, ROWS_SUFFIX]
        .iter()
        .find_map(|suffix| path.strip_suffix(suffix))
        .map(|stem| format!("{stem}{DATA_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_pair_up() {
        let data = "o/s/store/d/p=3/b-a-00000.parquet";
        let index = index_path(data).unwrap();
        assert_eq!(index, "o/s/store/d/p=3/b-a-00000.members.arrow");
        assert_eq!(companion_data(&index).as_deref(), Some(data));
        let legacy = legacy_index_path(data).unwrap();
        assert_eq!(legacy, "o/s/store/d/p=3/b-a-00000.members.parquet");
        assert_eq!(companion_data(&legacy).as_deref(), Some(data));
        assert_eq!(index_path(&legacy), None);
        assert_eq!(companion_data(data), None);
        assert_eq!(index_path("o/s/store/d/p=3/readme.txt"), None);
        assert_eq!(rows_path("s/d/p=1/x.parquet").as_deref(), Some("s/d/p=1/x.rows.arrow"));
        assert_eq!(rows_path("s/d/p=1/x.members.parquet"), None);
        assert_eq!(companion_data("s/d/p=1/x.rows.arrow").as_deref(), Some("s/d/p=1/x.parquet"));
        assert_eq!(companions(data).len(), 2);
        assert_eq!(all_companions(data).len(), 3);
    }
}
