//! How an export job is split into work units that any worker can claim: one or more per
//! partition that holds files, each a range of profile keys of about `unit_profiles` profiles.
//!
//! The plan reads only the catalog: a partition's size is the rows of its files, and its cut
//! points are taken from the key fences each file recorded when it was written (a key at every
//! row group), evenly spaced among all the partition's fences. Files sorted by key make a range
//! a run of consecutive rows in every file, so a unit reads its share and no more. A partition
//! whose files have no fences (written before fences were recorded) is one unit.

use std::collections::BTreeMap;

use segport_catalog::{NewUnit, StoreFile, StoreKind};

/// The units of an export over `files` (a snapshot), about `unit_profiles` profiles each,
/// ordered by partition and key; none when the whole export is about one unit's size (it then
/// runs as one task, its partitions in parallel on one worker).
pub fn plan_units(files: &[StoreFile], unit_profiles: u64) -> Vec<NewUnit> {
    let profiles: u64 = files
        .iter()
        .filter(|f| f.kind == StoreKind::Profile)
        .map(|f| u64::try_from(f.rows).unwrap_or(0))
        .sum();
    if profiles <= unit_profiles {
        return Vec::new();
    }
    let mut partitions: BTreeMap<u32, Vec<&StoreFile>> = BTreeMap::new();
    for file in files {
        partitions.entry(file.partition).or_default().push(file);
    }
    let mut units = Vec::new();
    for (partition, files) in partitions {
        let rows = |kind: StoreKind| -> u64 {
            files
                .iter()
                .filter(|f| f.kind == kind)
                .map(|f| u64::try_from(f.rows).unwrap_or(0))
                .sum()
        };
        // Profiles are counted by their fragments (an upper bound); a partition of events
        // only (profiles without fragments) by its events.
        let size = match rows(StoreKind::Profile) {
            0 => rows(StoreKind::Event),
            n => n,
        };
        let wanted = size.div_ceil(unit_profiles.max(1)).max(1);
        let mut fences: Vec<&str> =
            files.iter().flat_map(|f| f.key_fences.iter().map(String::as_str)).collect();
        fences.sort_unstable();
        fences.dedup();
        let cuts = usize::try_from(wanted - 1).unwrap_or(usize::MAX).min(fences.len());
        let mut points: Vec<&str> =
            (1..=cuts).map(|i| fences[i * fences.len() / (cuts + 1)]).collect();
        points.dedup();
        let mut from: Option<String> = None;
        for point in points {
            let to = Some(point.to_owned());
            units.push(NewUnit { partition, key_from: from, key_to: to.clone() });
            from = to;
        }
        units.push(NewUnit { partition, key_from: from, key_to: None });
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(partition: u32, kind: StoreKind, rows: i64, fences: &[&str]) -> StoreFile {
        StoreFile {
            id: 0,
            dataset_id: "d".into(),
            kind,
            partition,
            path: format!("p={partition}/f.parquet"),
            batch_id: None,
            ingest_ms: None,
            seq: 1,
            rows,
            bytes: 1,
            min_key: String::new(),
            max_key: String::new(),
            key_fences: fences.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    /// Units of a partition must cover every key once: consecutive ranges from the open start
    /// to the open end.
    fn assert_cover(units: &[NewUnit]) {
        let mut by_partition: BTreeMap<u32, Vec<&NewUnit>> = BTreeMap::new();
        for u in units {
            by_partition.entry(u.partition).or_default().push(u);
        }
        for (partition, units) in by_partition {
            assert_eq!(units[0].key_from, None, "partition {partition} starts open");
            assert_eq!(units[units.len() - 1].key_to, None, "partition {partition} ends open");
            for pair in units.windows(2) {
                assert_eq!(pair[0].key_to, pair[1].key_from, "partition {partition}");
                assert!(pair[0].key_to.is_some());
            }
            for u in units.iter().skip(1).take(units.len().saturating_sub(2)) {
                assert!(u.key_from < u.key_to, "{u:?}");
            }
        }
    }

    #[test]
    fn partitions_split_at_fences_into_units_of_about_the_size_asked() {
        let fences: Vec<String> = (0..100).map(|i| format!("k{i:03}")).collect();
        let fences: Vec<&str> = fences.iter().map(String::as_str).collect();
        let files = vec![
            // Partition 0: 1,000 profiles in two files whose fences interleave.
            file(0, StoreKind::Profile, 600, &fences[..60]),
            file(0, StoreKind::Profile, 400, &fences[60..]),
            file(0, StoreKind::Event, 5_000, &[]),
            // Partition 3: 150 profiles, no fences: one unit whatever its size.
            file(3, StoreKind::Profile, 150, &[]),
            // Partition 5: events only.
            file(5, StoreKind::Event, 700, &fences[..10]),
        ];
        let units = plan_units(&files, 250);
        assert_cover(&units);
        let count = |p: u32| units.iter().filter(|u| u.partition == p).count();
        assert_eq!((count(0), count(3), count(5)), (4, 1, 3));
        // Evenly spaced among the fences.
        let cuts: Vec<&str> =
            units.iter().filter(|u| u.partition == 0).filter_map(|u| u.key_to.as_deref()).collect();
        assert_eq!(cuts, ["k025", "k050", "k075"]);
        // A unit size above the profiles of every partition: one unit per partition with files.
        assert_eq!(plan_units(&files, 1_000).len(), 3);
        // A job of about one unit's size is not split.
        assert!(plan_units(&files, 1_150).is_empty());
        // More units wanted than fences: one per fence gap at most.
        let few = plan_units(&[file(1, StoreKind::Profile, 10_000, &["b", "a", "b"])], 10);
        assert_cover(&few);
        assert_eq!(few.len(), 3);
        assert!(plan_units(&[], 10).is_empty());
    }
}
