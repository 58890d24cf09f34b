//! How an export job is split into work units that any worker can claim, each of about
//! `unit_profiles` profiles: several whole partitions, or a range of one partition's profile
//! keys.
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
///
/// A store smaller than a unit per partition is cut between partitions into a power of two of
/// units (2, 4, 8, ...) of about equal size: a unit costs a claim, a few catalog reads and a
/// commit whatever its size, so units are not made smaller than asked, and a power of two
/// shares evenly among 2, 4 or 8 workers. A larger store gives each partition
/// `ceil(rows / unit_profiles)` key ranges.
pub fn plan_units(files: &[StoreFile], unit_profiles: u64) -> Vec<NewUnit> {
    let unit_profiles = unit_profiles.max(1);
    let rows = |files: &[&StoreFile], kind: StoreKind| -> u64 {
        files.iter().filter(|f| f.kind == kind).map(|f| u64::try_from(f.rows).unwrap_or(0)).sum()
    };
    let all: Vec<&StoreFile> = files.iter().collect();
    let profiles = rows(&all, StoreKind::Profile);
    if profiles <= unit_profiles {
        return Vec::new();
    }
    let mut partitions: BTreeMap<u32, Vec<&StoreFile>> = BTreeMap::new();
    for file in files {
        partitions.entry(file.partition).or_default().push(file);
    }
    // Profiles are counted by their fragments (an upper bound); a partition of events only
    // (profiles without fragments) by its events.
    let sized: Vec<(u32, Vec<&StoreFile>, u64)> = partitions
        .into_iter()
        .map(|(partition, files)| {
            let size = match rows(&files, StoreKind::Profile) {
                0 => rows(&files, StoreKind::Event),
                n => n,
            };
            (partition, files, size)
        })
        .collect();
    let wanted = profiles.div_ceil(unit_profiles);
    if wanted < sized.len() as u64 {
        return whole_partitions(&sized, wanted.next_power_of_two());
    }
    let mut units = Vec::new();
    for (partition, files, size) in sized {
        let wanted = size.div_ceil(unit_profiles).max(1);
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
            units.push(NewUnit {
                partitions: partition..=partition,
                key_from: from,
                key_to: to.clone(),
            });
            from = to;
        }
        units.push(NewUnit { partitions: partition..=partition, key_from: from, key_to: None });
    }
    units
}

/// `sized` (partition, files, size) cut between partitions into at most `groups` runs of about
/// equal size: a partition goes to the group its middle falls in.
fn whole_partitions(sized: &[(u32, Vec<&StoreFile>, u64)], groups: u64) -> Vec<NewUnit> {
    let total: u64 = sized.iter().map(|(_, _, size)| size).sum::<u64>().max(1);
    let mut units: Vec<(u64, NewUnit)> = Vec::new();
    let mut before = 0u64;
    for (partition, _, size) in sized {
        let middle = u128::from(before) * 2 + u128::from(*size);
        let group = u64::try_from(middle * u128::from(groups) / (u128::from(total) * 2))
            .unwrap_or(u64::MAX)
            .min(groups - 1);
        before += size;
        match units.last_mut() {
            Some((g, unit)) if *g == group => {
                unit.partitions = *unit.partitions.start()..=*partition;
            }
            _ => units.push((
                group,
                NewUnit { partitions: *partition..=*partition, key_from: None, key_to: None },
            )),
        }
    }
    units.into_iter().map(|(_, unit)| unit).collect()
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

    /// Units must cover every key of every partition once: per partition, consecutive ranges
    /// from the open start to the open end; a unit of several partitions takes them whole.
    fn assert_cover(units: &[NewUnit]) {
        let mut by_partition: BTreeMap<u32, Vec<&NewUnit>> = BTreeMap::new();
        for u in units {
            if u.partitions.start() < u.partitions.end() {
                assert_eq!((&u.key_from, &u.key_to), (&None, &None), "{u:?}");
            }
            for p in u.partitions.clone() {
                by_partition.entry(p).or_default().push(u);
            }
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
        for pair in units.windows(2) {
            assert!(pair[0].partitions.end() <= pair[1].partitions.start(), "in order: {pair:?}");
        }
    }

    fn in_partition(units: &[NewUnit], p: u32) -> usize {
        units.iter().filter(|u| u.partitions == (p..=p)).count()
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
        assert_eq!(units.len(), 8);
        assert_eq!(
            (in_partition(&units, 0), in_partition(&units, 3), in_partition(&units, 5)),
            (4, 1, 3)
        );
        // Evenly spaced among the fences.
        let cuts: Vec<&str> = units
            .iter()
            .filter(|u| u.partitions == (0..=0))
            .filter_map(|u| u.key_to.as_deref())
            .collect();
        assert_eq!(cuts, ["k025", "k050", "k075"]);
        // Fewer units wanted than partitions: whole partitions in about equal groups (sizes
        // 1,000, 150 and 700 into two).
        let two = plan_units(&files, 1_000);
        assert_cover(&two);
        let ranges: Vec<_> = two.iter().map(|u| u.partitions.clone()).collect();
        assert_eq!(ranges, [0..=0, 3..=5]);
        // A job of about one unit's size is not split.
        assert!(plan_units(&files, 1_150).is_empty());
        // More units wanted than fences: one per fence gap at most.
        let few = plan_units(&[file(1, StoreKind::Profile, 10_000, &["b", "a", "b"])], 10);
        assert_cover(&few);
        assert_eq!(few.len(), 3);
        assert!(plan_units(&[], 10).is_empty());
    }

    /// A store of a few unit sizes over 16 equal partitions makes a power of two of units of
    /// whole partitions, equal in size; one of many unit sizes splits every partition.
    #[test]
    fn a_small_store_is_cut_between_partitions_into_a_power_of_two_of_units() {
        let fences: Vec<String> = (0..64).map(|i| format!("k{i:03}")).collect();
        let fences: Vec<&str> = fences.iter().map(String::as_str).collect();
        let files: Vec<StoreFile> = (0..16)
            .flat_map(|p| {
                [
                    file(p, StoreKind::Profile, 60_000, &fences),
                    file(p, StoreKind::Profile, 6_000, &fences[..8]),
                    file(p, StoreKind::Event, 300_000, &[]),
                ]
            })
            .collect();
        // 1,056,000 profile rows: 5 units of 250,000 wanted, 8 made, of 2 partitions each.
        for (unit, made, each) in [(250_000, 8, 2), (600_000, 2, 8), (100_000, 16, 1)] {
            let units = plan_units(&files, unit);
            assert_cover(&units);
            assert_eq!(units.len(), made, "unit size {unit}: {units:?}");
            for (i, u) in units.iter().enumerate() {
                let first = u32::try_from(i * each).unwrap();
                assert_eq!(u.partitions, first..=first + u32::try_from(each).unwrap() - 1);
            }
        }
        // 10 times the store: 3 key ranges in each partition.
        let big: Vec<StoreFile> =
            files.iter().map(|f| StoreFile { rows: f.rows * 10, ..f.clone() }).collect();
        let units = plan_units(&big, 250_000);
        assert_cover(&units);
        assert_eq!(units.len(), 48);
        assert!((0..16).all(|p| in_partition(&units, p) == 3));
    }
}
