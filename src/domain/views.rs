//! Post views, counted in memory and written in batches: a view is not worth a
//! transaction (and an fsync) of its own. Views counted since the last flush are lost
//! if the process is killed; they are never acknowledged as durable.

use std::collections::HashMap;
use std::sync::Mutex;

/// Views per post not yet written.
#[derive(Debug, Default)]
pub struct ViewCounter {
    pending: Mutex<HashMap<u64, u64>>,
}

impl ViewCounter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one view of `post`.
    pub fn add(&self, post: u64) {
        *self.lock().entry(post).or_insert(0) += 1;
    }

    /// Views of `post` not yet written.
    pub fn pending(&self, post: u64) -> u64 {
        self.lock().get(&post).copied().unwrap_or(0)
    }

    /// Takes everything pending.
    pub fn take(&self) -> HashMap<u64, u64> {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back views whose write failed.
    pub fn restore(&self, views: HashMap<u64, u64>) {
        let mut pending = self.lock();
        for (post, n) in views {
            *pending.entry(post).or_insert(0) += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_accumulate_and_survive_a_failed_write() {
        let v = ViewCounter::default();
        v.add(1);
        v.add(1);
        v.add(2);
        assert_eq!(v.pending(1), 2);
        let taken = v.take();
        assert_eq!(v.pending(1), 0);
        v.add(1);
        v.restore(taken);
        assert_eq!(v.pending(1), 3);
        assert_eq!(v.pending(2), 1);
    }
}
