//! Where a region's replicas should be when stores say where they are.
//!
//! A store carries labels (`[server] labels` on the store, e.g. `zone=z1,
//! host=h1`), and PD's `[replication] location-labels` names the ones that
//! locate it, outermost first. Two stores are apart at the first of those
//! labels where both have a value and the values differ (ignoring case);
//! a store without a value for a label is taken to be anywhere, so at no
//! distance from anyone at that level, as upstream takes it. A store's
//! *distinct score* against a region's other replicas sums, over them, 100
//! to the power of how many labels lie below the one they differ at:
//!
//! ```text
//!   location-labels = ["zone", "host"]
//!   replicas on (z1,h1) (z1,h2); candidate (z2,h3): 100 + 100 = 200
//!                                 candidate (z1,h3):   1 +   1 =   2
//!                                 candidate (z1,h1):   0 +   1 =   1
//! ```
//!
//! The replica checker adds a replica where the score is highest, removes
//! the one where it is lowest, and moves a replica where another store
//! would score strictly higher (`move-to-better-location`); balance-region
//! never moves a replica to a store scoring lower than the one it leaves.
//! Without location labels every score is 0 and none of this applies.
//!
//! `[replication] isolation-level` (one of the location labels) is a hard
//! rule on top: no replica goes where another replica's labels down to
//! that level are all equal ([`isolated`]).

use tikal_proto::metapb;

/// The value of the store's label `key` (the key matched ignoring case),
/// or "" if it has none.
pub fn label_value<'a>(store: &'a metapb::Store, key: &str) -> &'a str {
    store
        .labels
        .iter()
        .find(|l| l.key.eq_ignore_ascii_case(key))
        .map_or("", |l| l.value.as_str())
}

/// The first of `labels` at which the two stores are apart, if any.
fn apart_at(a: &metapb::Store, b: &metapb::Store, labels: &[String]) -> Option<usize> {
    labels.iter().position(|key| {
        let (x, y) = (label_value(a, key), label_value(b, key));
        !x.is_empty() && !y.is_empty() && !x.eq_ignore_ascii_case(y)
    })
}

/// `other`'s distinct score against `stores` (any of them that is `other`
/// itself does not count); see the module docs.
pub fn distinct_score(labels: &[String], stores: &[&metapb::Store], other: &metapb::Store) -> u64 {
    let levels = u32::try_from(labels.len()).unwrap_or(u32::MAX);
    stores
        .iter()
        .filter(|s| s.id != other.id)
        .filter_map(|s| apart_at(s, other, labels))
        .map(|at| {
            let below = levels.saturating_sub(1).saturating_sub(at as u32);
            100u64.saturating_pow(below)
        })
        .fold(0u64, u64::saturating_add)
}

/// Whether `target` may take a replica beside `stores` under
/// `isolation-level` = `labels[level]`: its values of `labels[..=level]`
/// must differ from each of theirs somewhere. Compared exactly, as
/// upstream's isolation filter compares (so two stores both without a
/// value are at one place).
pub fn isolated(
    labels: &[String],
    level: usize,
    stores: &[&metapb::Store],
    target: &metapb::Store,
) -> bool {
    let Some(keys) = labels.get(..=level) else {
        return true;
    };
    let here: Vec<&str> = keys.iter().map(|k| label_value(target, k)).collect();
    (stores.iter()).filter(|s| s.id != target.id).all(|s| {
        keys.iter()
            .map(|k| label_value(s, k))
            .ne(here.iter().copied())
    })
}

/// The first label whose key or value breaks the store label format
/// ([`tikal_util::is_label_key`], [`tikal_util::is_label_value`]).
pub fn bad_label(labels: &[metapb::StoreLabel]) -> Option<&metapb::StoreLabel> {
    (labels.iter())
        .find(|l| !tikal_util::is_label_key(&l.key) || !tikal_util::is_label_value(&l.value))
}

/// Merges the labels a store reports into those PD has for it, as upstream
/// does: a reported key replaces the one of the same name (ignoring case),
/// new keys are added, keys no longer reported stay, and a key reported
/// with an empty value is dropped.
pub fn merge_labels(
    old: &[metapb::StoreLabel],
    new: &[metapb::StoreLabel],
) -> Vec<metapb::StoreLabel> {
    let mut merged: Vec<metapb::StoreLabel> = old.to_vec();
    for l in new {
        match merged
            .iter_mut()
            .find(|m| m.key.eq_ignore_ascii_case(&l.key))
        {
            Some(m) => m.value = l.value.clone(),
            None => merged.push(l.clone()),
        }
    }
    merged.retain(|l| !l.value.is_empty());
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(id: u64, labels: &[(&str, &str)]) -> metapb::Store {
        metapb::Store {
            id,
            labels: labels
                .iter()
                .map(|(k, v)| metapb::StoreLabel {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn scores_count_how_far_apart_stores_are_by_level() {
        let labels = vec!["zone".to_string(), "host".to_string()];
        let a = store(1, &[("zone", "z1"), ("host", "h1")]);
        let b = store(2, &[("zone", "z1"), ("host", "h2")]);
        let score = |c: &metapb::Store| distinct_score(&labels, &[&a, &b], c);
        assert_eq!(score(&store(3, &[("zone", "z2"), ("host", "h3")])), 200);
        assert_eq!(score(&store(3, &[("zone", "z1"), ("host", "h3")])), 2);
        assert_eq!(
            score(&store(3, &[("Zone", "Z1"), ("host", "H1")])),
            1,
            "case"
        );
        // No zone: anywhere at that level, so only hosts tell.
        assert_eq!(score(&store(3, &[("host", "h3")])), 2);
        assert_eq!(score(&store(3, &[])), 0);
        // A store does not count against itself.
        assert_eq!(score(&a), 1);
        assert_eq!(
            distinct_score(&[], &[&a, &b], &store(3, &[("zone", "z9")])),
            0
        );
    }

    #[test]
    fn isolation_refuses_a_place_another_replica_has() {
        let labels = vec!["zone".to_string(), "host".to_string()];
        let a = store(1, &[("zone", "z1"), ("host", "h1")]);
        let b = store(2, &[("zone", "z2"), ("host", "h2")]);
        let zone = |c: &metapb::Store| isolated(&labels, 0, &[&a, &b], c);
        let host = |c: &metapb::Store| isolated(&labels, 1, &[&a, &b], c);
        let same_zone = store(3, &[("zone", "z1"), ("host", "h9")]);
        assert!(!zone(&same_zone) && host(&same_zone));
        assert!(zone(&store(3, &[("zone", "z3")])));
        assert!(!host(&store(3, &[("zone", "z2"), ("host", "h2")])));
        // No zone at all is a place of its own, shared by all without one.
        let nowhere = store(3, &[]);
        assert!(zone(&nowhere));
        assert!(!isolated(&labels, 0, &[&a, &store(4, &[])], &nowhere));
    }

    #[test]
    fn reported_labels_merge_into_known_ones() {
        let old = store(1, &[("zone", "z1"), ("host", "h1"), ("rack", "r1")]).labels;
        let new = store(1, &[("Host", "h2"), ("disk", "ssd"), ("rack", "")]).labels;
        let merged: Vec<(String, String)> = merge_labels(&old, &new)
            .into_iter()
            .map(|l| (l.key, l.value))
            .collect();
        let expect = [("zone", "z1"), ("host", "h2"), ("disk", "ssd")];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(merged, expect);
    }
}
