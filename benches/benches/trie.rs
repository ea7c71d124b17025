//! Subscription trie: cost of matching one topic, and of inserting, versus the number of
//! filters. Filters mix literal, `+` and `#` ones over an IoT-like topic space
//! "site/{s}/dev/{d}/{metric}".

use std::hint::black_box;
use std::sync::Arc;

use broker_core::subscriptions::SubscriptionTree;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const SITES: u64 = 100;
const DEVICES: u64 = 1_000;
const METRICS: [&str; 8] = ["temp", "hum", "co2", "volt", "amp", "rssi", "state", "fw"];

/// xorshift64: reproducible workloads without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn metric(&mut self) -> &'static str {
        METRICS[self.below(METRICS.len() as u64) as usize]
    }
}

/// 80% literal, 10% one '+', 5% trailing '#', 5% both; each with its own client.
fn gen_filters(n: usize, seed: u64) -> Vec<(String, Arc<str>)> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let (s, d, m) = (rng.below(SITES), rng.below(DEVICES), rng.metric());
            let filter = match rng.below(20) {
                0..=15 => format!("site/{s}/dev/{d}/{m}"),
                16 => format!("site/{s}/dev/+/{m}"),
                17 => format!("site/{s}/dev/{d}/#"),
                18 => format!("site/+/dev/{d}/{m}"),
                _ => format!("site/{s}/dev/+/#"),
            };
            (filter, Arc::from(format!("client-{i}")))
        })
        .collect()
}

fn gen_topics(count: usize) -> Vec<String> {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    (0..count)
        .map(|_| {
            let (s, d, m) = (rng.below(SITES), rng.below(DEVICES), rng.metric());
            format!("site/{s}/dev/{d}/{m}")
        })
        .collect()
}

fn build(filters: &[(String, Arc<str>)]) -> SubscriptionTree<Arc<str>, u8> {
    let mut tree = SubscriptionTree::new();
    for (filter, key) in filters {
        tree.insert(filter, key.clone(), 1);
    }
    tree
}

fn matching(c: &mut Criterion) {
    let topics = gen_topics(1024);
    let mut group = c.benchmark_group("match");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let tree = build(&gen_filters(n, SEED));
        let mut total = 0;
        for topic in &topics {
            tree.for_each_match(topic, |_| total += 1);
        }
        // Matching cost grows with the matches found; print them to read the figures.
        eprintln!(
            "{n} filters: {:.2} matches per topic",
            total as f64 / topics.len() as f64
        );
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                i = (i + 1) % topics.len();
                let mut found = 0usize;
                tree.for_each_match(black_box(&topics[i]), |_| found += 1);
                found
            })
        });
    }
    group.finish();
}

fn inserting(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert");
    // Building 100k filters takes tens of milliseconds per iteration.
    group.sample_size(10);
    for n in SIZES {
        let filters = gen_filters(n, SEED);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("build", n), &filters, |b, f| {
            b.iter(|| build(f))
        });
        // Steady state: one subscribe and unsubscribe against a tree of n filters.
        let mut tree = build(&filters);
        let extra = gen_filters(1024, SEED + 1);
        let key: Arc<str> = Arc::from("bench-client");
        let mut i = 0;
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("insert_remove", n), |b| {
            b.iter(|| {
                i = (i + 1) % extra.len();
                let (filter, _) = &extra[i];
                tree.insert(filter, key.clone(), 1);
                tree.remove(filter, &key)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matching, inserting);
criterion_main!(benches);
