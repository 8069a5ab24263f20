//! Topic trie micro benchmarks: matching one topic against 1,000,000
//! subscriptions, and subscribe / unsubscribe in a tree that size. Run with
//! `cargo bench --bench trie`.
//!
//! The million subscriptions are a mix a building-automation deployment
//! might hold, one client each: 700,000 exact filters eight levels deep
//! (`site/S/building/B/floor/F/device/D/temperature`), 200,000 with `+`
//! levels (`site/S/building/+/floor/F/device/D/+`), 90,000 `#` filters on
//! a building (`site/S/building/B/#`), 9,990 shallow status filters
//! (`+/status/N`), and 10 catch-all `#` subscribers.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use petrel::router::topic_tree::{Match, TopicTree};

const SITES: usize = 10;
const BUILDINGS: usize = 100;
const FLOORS: usize = 10;
const DEVICES: usize = 70;

fn tree() -> TopicTree<(Arc<str>, u32)> {
    let mut tree = TopicTree::new();
    let mut id = 0u32;
    let mut add = |tree: &mut TopicTree<(Arc<str>, u32)>, filter: String| {
        tree.insert(None, &filter, (Arc::from(format!("client-{id}")), id));
        id += 1;
    };
    for s in 0..SITES {
        for b in 0..BUILDINGS {
            for f in 0..FLOORS {
                for d in 0..DEVICES {
                    add(
                        &mut tree,
                        format!("site/{s}/building/{b}/floor/{f}/device/{d}/temperature"),
                    );
                }
            }
        }
    }
    // 200,000 with wildcard levels.
    for s in 0..SITES {
        for f in 0..FLOORS {
            for d in 0..2_000 {
                add(
                    &mut tree,
                    format!("site/{s}/building/+/floor/{f}/device/{d}/+"),
                );
            }
        }
    }
    // 90,000 multi-level filters (900 per building, on distinct sites).
    for n in 0..90_000 {
        add(
            &mut tree,
            format!("site/{}/building/{}/#", n % 1_000, n / 1_000),
        );
    }
    for n in 0..9_990 {
        add(&mut tree, format!("+/status/{n}"));
    }
    for _ in 0..10 {
        add(&mut tree, "#".to_owned());
    }
    assert_eq!(tree.len(), 1_000_000);
    tree
}

fn count(tree: &TopicTree<(Arc<str>, u32)>, topic: &str) -> usize {
    let mut matched = 0;
    tree.for_each_match(topic, |found| {
        matched += match found {
            Match::One(..) => 1,
            Match::Group(group) => group.members.len(),
        }
    });
    matched
}

fn trie(c: &mut Criterion) {
    let tree = tree();
    let mut group = c.benchmark_group("trie_1M");
    // An exact topic matched by its own filter, a `+` filter, a `#` filter
    // and the catch-alls.
    let topic = "site/3/building/42/floor/7/device/12/temperature";
    assert!(count(&tree, topic) >= 12, "{}", count(&tree, topic));
    group.bench_function("match_deep_topic", |b| {
        b.iter(|| count(&tree, black_box(topic)))
    });
    let unmatched = "elsewhere/3/building/42/floor/7/device/12/temperature";
    group.bench_function("match_topic_only_catch_alls", |b| {
        b.iter(|| count(&tree, black_box(unmatched)))
    });
    let mut tree = tree;
    let client: Arc<str> = Arc::from("bench-client");
    group.bench_function("subscribe_unsubscribe", |b| {
        b.iter(|| {
            tree.insert(
                None,
                black_box("site/3/building/42/floor/7/device/999/humidity"),
                (Arc::clone(&client), 1),
            );
            tree.remove(
                None,
                black_box("site/3/building/42/floor/7/device/999/humidity"),
                "bench-client",
            )
        })
    });
    group.finish();
}

criterion_group!(benches, trie);
criterion_main!(benches);
