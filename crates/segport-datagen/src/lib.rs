//! Deterministic synthetic data (docs/data.md): profiles with identities, attributes and segment
//! memberships of skewed popularity, and the experience events of those profiles.
//!
//! Every profile is generated from its own random stream, seeded from the run's seed and the
//! profile's number, so the output is the same for a seed however the work is split across
//! threads, and any one profile can be regenerated alone.

use std::io::Write;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Segments in every generated store.
pub const SEGMENTS: usize = 100;
/// Share of profiles in the most and the least popular segment.
const MOST_POPULAR: f64 = 0.30;
const LEAST_POPULAR: f64 = 0.001;
const MAX_MEMBERSHIPS: usize = 12;
/// 2025-01-01T00:00:00Z and 2026-11-01T00:00:00Z: the span of qualification and event times.
pub const TIME_FROM_MS: i64 = 1_735_689_600_000;
pub const TIME_TO_MS: i64 = 1_793_491_200_000;

/// One segment of the generated population.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub id: String,
    pub ns: &'static str,
    pub name: String,
    /// The share of profiles that hold a membership in it (any status).
    pub popularity: f64,
}

/// The 100 segments of a seed, most popular first.
pub fn segments(seed: u64) -> Vec<Segment> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, u64::MAX));
    (0..SEGMENTS)
        .map(|i| {
            let t = i as f64 / (SEGMENTS - 1) as f64;
            let popularity = MOST_POPULAR * (LEAST_POPULAR / MOST_POPULAR).powf(t);
            let a: u32 = rng.gen();
            let b: u16 = rng.gen();
            let c: u64 = rng.gen();
            Segment {
                id: format!(
                    "{a:08x}-{b:04x}-4{:03x}-a{:03x}-{:012x}",
                    i,
                    i * 7 % 4096,
                    c & 0xffff_ffff_ffff
                ),
                ns: "ups",
                name: format!("segment {i:02} ({:.1}%)", popularity * 100.0),
                popularity,
            }
        })
        .collect()
}

/// SplitMix64 finaliser: a well-spread seed for profile `n` of run `seed`.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B3_E841);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const FIRST_NAMES: [&str; 16] = [
    "Ada", "Ben", "Chloé", "Dmitri", "Eva", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Mateo", "Nora", "Oskar", "Priya",
];
const LAST_NAMES: [&str; 12] = [
    "Schmidt", "Garcia", "Tanaka", "Okafor", "Novak", "Rossi", "Dubois", "Larsen", "Kowalski",
    "Silva", "Müller", "O'Brien",
];
const CITIES: [(&str, &str); 8] = [
    ("Berlin", "DE"),
    ("Hamburg", "DE"),
    ("Paris", "FR"),
    ("Lyon", "FR"),
    ("Madrid", "ES"),
    ("Milano", "IT"),
    ("Amsterdam", "NL"),
    ("Wien", "AT"),
];
const TIERS: [&str; 4] = ["bronze", "silver", "gold", "platinum"];
const PAGES: [&str; 6] = ["home", "search", "product", "cart", "checkout", "account"];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// Share of profiles (with a profile record) that get a fragment in the second, updating dataset.
const UPDATED: f64 = 0.10;

/// One generated profile: its profile record (absent for an empty profile), its fragment in the
/// updating dataset (about 10% of profiles with a record) and its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub profile: Option<Value>,
    pub update: Option<Value>,
    pub events: Vec<Value>,
}

/// Profile number `n` of run `seed`.
pub fn profile(seed: u64, n: u64, segments: &[Segment]) -> Generated {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, n));
    let ecid = format!("ECID-{n}");
    let first = FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())];
    let last = LAST_NAMES[rng.gen_range(0..LAST_NAMES.len())];
    let email = format!("{}.{}.{n}@example.com", first.to_lowercase(), last.to_lowercase());
    let email_primary = rng.gen_bool(0.10);
    let crm = rng.gen_bool(0.30);
    let empty = rng.gen_bool(0.03);

    let mut identity_map = Map::new();
    identity_map.insert(
        "ECID".into(),
        json!([{"id": ecid, "primary": !email_primary, "authenticatedState": "ambiguous"}]),
    );
    if email_primary {
        identity_map.insert(
            "Email".into(),
            json!([{"id": email, "primary": true, "authenticatedState": "authenticated"}]),
        );
    }
    if crm {
        identity_map.insert("CRMID".into(), json!([{"id": format!("CRM-{n}"), "primary": false}]));
    }
    // Events carry the profile's primary identity, so they join it by key.
    let event_identity = if email_primary {
        json!({"Email": [{"id": email, "primary": true}]})
    } else {
        json!({"ECID": [{"id": ecid, "primary": true}]})
    };

    let profile = (!empty).then(|| {
        let mut memberships = Map::new();
        for s in segments {
            if memberships.len() >= MAX_MEMBERSHIPS {
                break;
            }
            if rng.gen_bool(s.popularity) {
                let roll: f64 = rng.gen();
                let status = if roll < 0.60 {
                    "existing"
                } else if roll < 0.85 {
                    "realized"
                } else {
                    "exited"
                };
                let at = rng.gen_range(TIME_FROM_MS..TIME_TO_MS);
                memberships.insert(
                    s.id.clone(),
                    json!({"status": status, "lastQualificationTime": rfc3339(at)}),
                );
            }
        }
        let (city, country) = CITIES[rng.gen_range(0..CITIES.len())];
        let birth = format!(
            "{}-{:02}-{:02}",
            rng.gen_range(1940..2006),
            rng.gen_range(1..13),
            rng.gen_range(1..29)
        );
        let mut record = json!({
            "identityMap": identity_map,
            "personalEmail": {"address": email},
            "person": {"name": {"firstName": first, "lastName": last}, "birthDate": birth},
            "homeAddress": {"city": city, "country": country, "postalCode": format!("{:05}", rng.gen_range(1000..99999))},
            "loyalty": {"points": rng.gen_range(0..50_000), "tier": TIERS[rng.gen_range(0..TIERS.len())]},
        });
        if !memberships.is_empty() {
            record["segmentMembership"] = json!({"ups": memberships});
        }
        record
    });

    // 0 to 10 events, 5 on average.
    let count = rng.gen_range(0..=10);
    let events = (0..count)
        .map(|e| {
            let at = rng.gen_range(TIME_FROM_MS..TIME_TO_MS);
            let page = PAGES[rng.gen_range(0..PAGES.len())];
            let purchase = page == "checkout";
            let mut event = json!({
                "_id": format!("evt-{n}-{e}"),
                "timestamp": rfc3339(at),
                "eventType": if purchase { "commerce.purchases" } else { "web.webpagedetails.pageViews" },
                "identityMap": event_identity,
                "web": {"webPageDetails": {"name": page, "URL": format!("https://shop.example.com/{page}")}},
            });
            if purchase {
                event["commerce"] = json!({"order": {
                    "priceTotal": (rng.gen_range(100..100_000) as f64) / 100.0,
                    "currency": CURRENCIES[rng.gen_range(0..CURRENCIES.len())],
                }});
            }
            event
        })
        .collect();
    let update = profile.as_ref().and_then(|_| update(seed, n, segments, &identity_map));
    Generated { profile, update, events }
}

/// The updating fragment of profile `n`, if it has one: same identities, new loyalty figures, and
/// for half of them a new qualification in one segment, which wins over the profile record's only
/// when its qualification time is later (so that merging decides both ways).
fn update(
    seed: u64,
    n: u64,
    segments: &[Segment],
    identity_map: &Map<String, Value>,
) -> Option<Value> {
    // A stream of its own, so that adding updates left the base data unchanged.
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed ^ 0x5550_4441_5445_5321, n));
    if !rng.gen_bool(UPDATED) {
        return None;
    }
    let mut record = json!({
        "identityMap": identity_map,
        "loyalty": {"points": rng.gen_range(0..50_000), "tier": TIERS[rng.gen_range(0..TIERS.len())]},
    });
    if rng.gen_bool(0.5) {
        let s = &segments[rng.gen_range(0..segments.len())];
        let status = if rng.gen_bool(0.7) { "realized" } else { "exited" };
        let at = rng.gen_range(TIME_FROM_MS..TIME_TO_MS);
        record["segmentMembership"] = json!({"ups": {s.id.clone(): {"status": status, "lastQualificationTime": rfc3339(at)}}});
    }
    Some(record)
}

/// What a generation run wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub profiles: u64,
    pub empty_profiles: u64,
    pub updates: u64,
    pub events: u64,
    pub bytes: u64,
}

/// One chunk's NDJSON: profiles, events, updates, and what it holds.
type Chunk = (Vec<u8>, Vec<u8>, Vec<u8>, Summary);

/// Writes `profiles` profiles of `seed` to `dir/profiles.ndjson`, their events to
/// `dir/events.ndjson`, the updating fragments to `dir/updates.ndjson` and the segments to
/// `dir/segments.json`, in parallel chunks, in order.
pub fn write(dir: &Path, profiles: u64, seed: u64) -> std::io::Result<Summary> {
    std::fs::create_dir_all(dir)?;
    let segments = segments(seed);
    std::fs::write(dir.join("segments.json"), serde_json::to_vec_pretty(&segments)?)?;
    let mut profile_out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(dir.join("profiles.ndjson"))?,
    );
    let mut event_out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(dir.join("events.ndjson"))?,
    );
    let mut update_out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(dir.join("updates.ndjson"))?,
    );
    let mut summary = Summary::default();
    const CHUNK: u64 = 20_000;
    let mut start = 0;
    while start < profiles {
        let end = (start + CHUNK * 8).min(profiles);
        let chunks: Vec<Chunk> = (start..end)
            .step_by(CHUNK as usize)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|from| {
                let mut p = Vec::with_capacity(CHUNK as usize * 500);
                let mut e = Vec::with_capacity(CHUNK as usize * 1500);
                let mut u = Vec::with_capacity(CHUNK as usize * 40);
                let mut s = Summary::default();
                for n in from..(from + CHUNK).min(end) {
                    let g = profile(seed, n, &segments);
                    match &g.profile {
                        Some(record) => {
                            serde_json::to_writer(&mut p, record).map_err(std::io::Error::other)?;
                            p.push(b'\n');
                            s.profiles += 1;
                        }
                        None => s.empty_profiles += 1,
                    }
                    if let Some(record) = &g.update {
                        serde_json::to_writer(&mut u, record).map_err(std::io::Error::other)?;
                        u.push(b'\n');
                        s.updates += 1;
                    }
                    for event in &g.events {
                        serde_json::to_writer(&mut e, event).map_err(std::io::Error::other)?;
                        e.push(b'\n');
                        s.events += 1;
                    }
                }
                Ok((p, e, u, s))
            })
            .collect::<std::io::Result<_>>()?;
        for (p, e, u, s) in chunks {
            profile_out.write_all(&p)?;
            event_out.write_all(&e)?;
            update_out.write_all(&u)?;
            summary.profiles += s.profiles;
            summary.empty_profiles += s.empty_profiles;
            summary.updates += s.updates;
            summary.events += s.events;
            summary.bytes += (p.len() + e.len() + u.len()) as u64;
        }
        start = end;
    }
    profile_out.flush()?;
    event_out.flush()?;
    update_out.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped_like_design() {
        let segs = segments(7);
        assert_eq!(segs.len(), 100);
        assert_eq!(segs, segments(7));
        assert!(
            (segs[0].popularity - 0.30).abs() < 1e-9 && (segs[99].popularity - 0.001).abs() < 1e-9
        );
        assert_eq!(profile(7, 42, &segs), profile(7, 42, &segs));
        assert_ne!(profile(7, 42, &segs), profile(8, 42, &segs));

        let n = 20_000;
        let all: Vec<Generated> = (0..n).map(|i| profile(7, i, &segs)).collect();
        let empty = all.iter().filter(|g| g.profile.is_none()).count() as f64 / n as f64;
        assert!((0.02..0.04).contains(&empty), "{empty}");
        let events = all.iter().map(|g| g.events.len()).sum::<usize>() as f64 / n as f64;
        assert!((4.5..5.5).contains(&events), "{events}");
        let in_top = all
            .iter()
            .filter(|g| {
                g.profile
                    .as_ref()
                    .is_some_and(|p| p["segmentMembership"]["ups"].get(&segs[0].id).is_some())
            })
            .count() as f64
            / n as f64;
        assert!((0.27..0.33).contains(&in_top), "{in_top}");
        let email_primary = all
            .iter()
            .filter_map(|g| g.profile.as_ref())
            .filter(|p| p["identityMap"].get("Email").is_some())
            .count() as f64
            / n as f64;
        assert!((0.08..0.12).contains(&email_primary), "{email_primary}");
        let with_record = all.iter().filter(|g| g.profile.is_some()).count() as f64;
        let updated = all.iter().filter(|g| g.update.is_some()).count() as f64 / with_record;
        assert!((0.09..0.11).contains(&updated), "{updated}");
        for g in all.iter().filter(|g| g.update.is_some()) {
            let (p, u) = (g.profile.as_ref().unwrap(), g.update.as_ref().unwrap());
            assert_eq!(p["identityMap"], u["identityMap"]);
        }
        assert!(all.iter().all(|g| g.profile.is_some() || g.update.is_none()));
    }
}
