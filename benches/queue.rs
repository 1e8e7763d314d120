//! Queue throughput through the library: no-op tasks enqueued by many concurrent
//! producers (one group-committed write per task, as a request would), leased by the
//! worker pool, run and acknowledged. One iteration is `TASKS` tasks from the first
//! enqueue until the last ack, on a fresh store; opening and closing the store are
//! not timed. Run with `cargo bench --bench queue`. Besides criterion's figures it
//! prints what one task costs the store: key writes, transactions and flushes.
//!
//! `sync` and `relaxed` run tasks of no user, which are forgotten as they succeed;
//! `sync-kept` runs tasks owned by a user, whose results are kept for `result_ttl_s`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use likewise::config::Durability;
use likewise::queue::{self, QueueSettings, Registry, TaskContext, TaskSpec, WorkerPool};
use likewise::store::Store;

/// Tasks per iteration.
const TASKS: u64 = 20_000;
/// Concurrent producers.
const PRODUCERS: u64 = 64;
/// Worker concurrency (the server's default on 2 cores is 8; no-op tasks want more).
const WORKERS: usize = 64;

/// Store counters summed over every iteration: tasks, key writes, transactions,
/// flushes.
static COST: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Enqueues, runs and acks `TASKS` no-op tasks (owned by a user when `kept`, so
/// that their results are kept); returns the time it took.
async fn run_once(durability: Durability, kept: bool) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    let store = tokio::task::spawn_blocking(move || Store::open(&path, durability, 500))
        .await
        .expect("open task")
        .expect("store opens");
    let mut registry = Registry::default();
    registry.register("noop", |_ctx: TaskContext| async { Ok(None) });
    let pool = WorkerPool::new(store.clone(), registry, WORKERS, QueueSettings::default());
    let dispatcher = pool.start();

    let started = Instant::now();
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        let store = store.clone();
        producers.push(tokio::spawn(async move {
            let mut spec = TaskSpec::new("noop", &(), 1).expect("() encodes");
            if kept {
                spec = spec.owned_by(1);
            }
            for _ in 0..TASKS / PRODUCERS {
                let spec = spec.clone();
                store
                    .write(move |tx| queue::enqueue(tx, &spec))
                    .await
                    .expect("enqueued");
            }
        }));
    }
    for p in producers {
        p.await.expect("producer");
    }
    let want = TASKS / PRODUCERS * PRODUCERS;
    // Acks have no event of their own: poll the pool's counter closely.
    while pool.stats().completed.load(Ordering::Relaxed) < want {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let elapsed = started.elapsed();
    let w = store.writer_stats();
    for (total, n) in COST.iter().zip([
        want,
        w.key_writes.load(Ordering::Relaxed),
        w.transactions.load(Ordering::Relaxed),
        w.flushes.load(Ordering::Relaxed),
    ]) {
        total.fetch_add(n, Ordering::Relaxed);
    }

    pool.shutdown(Duration::from_secs(5)).await;
    let _ = dispatcher.await;
    tokio::task::spawn_blocking(move || store.close())
        .await
        .expect("close task");
    elapsed
}

fn queue_throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("queue");
    group.throughput(Throughput::Elements(TASKS / PRODUCERS * PRODUCERS));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for (name, durability, kept) in [
        ("sync", Durability::Sync, false),
        ("sync-kept", Durability::Sync, true),
        ("relaxed", Durability::Relaxed, false),
    ] {
        for c in &COST {
            c.store(0, Ordering::Relaxed);
        }
        group.bench_function(BenchmarkId::new("enqueue_lease_ack", name), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += run_once(durability, kept).await;
                    }
                    total
                })
            })
        });
        let [tasks, keys, transactions, flushes] =
            COST.each_ref().map(|c| c.load(Ordering::Relaxed));
        if tasks > 0 {
            let per = |n: u64| n as f64 / tasks as f64;
            println!(
                "queue/{name}: per task {:.2} key writes, {:.3} transactions, {:.3} flushes \
                 ({tasks} tasks)",
                per(keys),
                per(transactions),
                per(flushes)
            );
        }
    }
    group.finish();
}

criterion_group!(benches, queue_throughput);
criterion_main!(benches);
