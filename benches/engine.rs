//! The floor under a like: what sled alone costs for the keys one like writes, with
//! no HTTP, no domain code and no writer thread around it.
//!
//! Each like reads and writes what the store's like commit does — it reads the post,
//! the like's key, the post's counts, the event mark, the receiver's unread count and
//! the liker's user record, and writes 7 keys: the like, the post's counts, the
//! notification (a 60-byte value), the receiver's notification index and unread
//! index entries, the unread count and the event mark — in 8 trees, 15 likes per
//! sled transaction (what the writer commits per batch under load), with a flush after
//! every transaction (`sync`). It prints the CPU the process used per like (sled's
//! background threads included), likes/s on one thread, and the data directory's bytes
//! per like after the database is closed, next to the bytes of keys and values.
//!
//! Run with `cargo bench --bench engine`; `LIKEWISE_BENCH_LIKES=N` (default 200,000)
//! and `LIKEWISE_BENCH_BATCH=N` (likes per transaction, default 15) change the sizes.

mod common;

use std::time::Instant;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

/// Trees, in the order the closure indexes them.
const TREES: [&str; 8] = [
    "posts",
    "users",
    "post_likes",
    "post_counts",
    "notifications",
    "user_notifications",
    "user_unread",
    "unread_counts",
];
/// The event marks live in a ninth tree.
const EFFECTS: &str = "effects";
const POSTS: u64 = 4_000;
const USERS: u64 = 256;

fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

/// User plus system CPU this process has used, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("ticks");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let likes = common::env_or("LIKEWISE_BENCH_LIKES", 200_000u64).max(1);
    let batch = common::env_or("LIKEWISE_BENCH_BATCH", 15u64).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(16 * 1024 * 1024)
        .flush_every_ms(None)
        .open()
        .expect("sled opens");
    let mut trees: Vec<sled::Tree> = TREES
        .iter()
        .map(|n| db.open_tree(n).expect("tree"))
        .collect();
    trees.push(db.open_tree(EFFECTS).expect("tree"));
    for post in 0..POSTS {
        trees[0]
            .insert(post.to_be_bytes(), vec![7u8; 80])
            .expect("post");
    }
    for user in 0..USERS {
        trees[1]
            .insert(user.to_be_bytes(), vec![7u8; 120])
            .expect("user");
    }
    db.flush().expect("flush");

    let mut live = 0u64;
    let started = Instant::now();
    let cpu = cpu_seconds();
    let mut next = 0u64;
    while next < likes {
        let range = next..(next + batch).min(likes);
        next = range.end;
        let written: Result<u64, TransactionError<()>> = trees.as_slice().transaction(|t| {
            let mut bytes = 0u64;
            for like in range.clone() {
                let post = like % POSTS;
                let user = (like / POSTS) % USERS;
                let receiver = post % USERS;
                t[0].get(post.to_be_bytes())?;
                t[1].get(user.to_be_bytes())?;
                let key = pair(post, like);
                if t[2].get(key)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                let counts = t[3].get(post.to_be_bytes())?.map_or(0, |v| v.len() as u64);
                let unread = t[7]
                    .get(receiver.to_be_bytes())?
                    .map_or(0, |v| v.len() as u64);
                let mark = pair(like, 1);
                t[8].get(mark)?;
                let writes: [(&sled::transaction::TransactionalTree, Vec<u8>, Vec<u8>); 7] = [
                    (&t[2], key.to_vec(), like.to_be_bytes().to_vec()),
                    (
                        &t[3],
                        post.to_be_bytes().to_vec(),
                        (counts + 1).to_be_bytes().to_vec(),
                    ),
                    (&t[4], like.to_be_bytes().to_vec(), vec![1u8; 60]),
                    (&t[5], pair(receiver, like).to_vec(), Vec::new()),
                    (&t[6], pair(receiver, like).to_vec(), Vec::new()),
                    (
                        &t[7],
                        receiver.to_be_bytes().to_vec(),
                        (unread + 1).to_be_bytes().to_vec(),
                    ),
                    (&t[8], mark.to_vec(), like.to_be_bytes().to_vec()),
                ];
                for (tree, k, v) in writes {
                    bytes += (k.len() + v.len()) as u64;
                    tree.insert(k, v)?;
                }
            }
            Ok(bytes)
        });
        live += written.expect("every like is new");
        db.flush().expect("flush");
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    drop(trees);
    drop(db);
    let bytes = common::dir_bytes(dir.path());
    println!(
        "engine: {likes} likes, {batch} per transaction, a flush each: {:.0} likes/s on one \
         thread; {:.1} us of CPU per like (sled's threads included); {:.0} bytes per like on \
         disk after close, {:.0} of them keys and values ({:.1}x)",
        likes as f64 / wall,
        cpu * 1e6 / likes as f64,
        bytes as f64 / likes as f64,
        live as f64 / likes as f64,
        bytes as f64 / live as f64,
    );
}
