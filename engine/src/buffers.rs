//! Reused read buffers: a pool of part-sized `Vec<u8>`s, so that a copy of large objects
//! does not allocate, fault in (the kernel zeroes every fresh page) and free a part's
//! worth of memory for every part, and glibc does not keep the freed buffers in its
//! heaps on top of the live ones (bench/RESULTS.md, W1).
//!
//! - [`Pool::take`] hands out a [`Buf`]: an empty `Vec` with room for the request, reused
//!   when one is free, else allocated (never zeroed: stores read into its spare capacity).
//! - [`Buf::freeze`] makes it a [`Bytes`] whose owner gives the `Vec` back to the pool
//!   when the last `Bytes` referring to it is dropped (an uploaded part's, a checksum
//!   task's, a retried request's clone: whichever goes last). A buffer is therefore never
//!   handed out again while anything can still read it, and a failed or retried request
//!   that drops its `Buf` returns it at once.
//! - The pool keeps at most `keep` free buffers (the run's concurrency plus a little
//!   slack); more in use at once are allocated and freed as before. It never waits: it is
//!   a cache, the pipeline's in-flight permits are what bound memory.
//!
//! Stores keep the [`crate::store::Store`] signatures: the fetcher runs a GET inside
//! [`Pool::scope`], and a store's read asks [`take`] for its buffer, which comes from
//! the pool in scope (a plain allocation outside any, or when the pool cannot serve it).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// Requests smaller than this are allocated as before: malloc serves them from its heaps
/// without faulting in fresh pages, and pooling them would pin part-sized buffers for
/// small objects.
pub const MIN_POOLED: usize = 1 << 20;

tokio::task_local! {
    static SCOPE: Pool;
}

/// A bounded cache of read buffers. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    free: Mutex<Vec<Vec<u8>>>,
    /// The most free buffers kept.
    keep: usize,
    /// The capacity a fresh buffer gets at least (the part size), so that it serves any
    /// later part.
    size: usize,
    /// The largest capacity kept (the larger of part size and multipart threshold);
    /// larger requests are served by a plain allocation.
    max: usize,
    stats: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    fresh: AtomicU64,
    reused: AtomicU64,
    unpooled: AtomicU64,
    returned: AtomicU64,
    dropped: AtomicU64,
}

/// What a pool has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers allocated for the pool.
    pub fresh: u64,
    /// Requests served by a free buffer.
    pub reused: u64,
    /// Requests served outside the pool (too small or too large).
    pub unpooled: u64,
    /// Buffers given back and kept.
    pub returned: u64,
    /// Buffers given back and freed (the pool was full, or they had grown too large).
    pub dropped: u64,
}

impl Pool {
    /// A pool keeping at most `keep` free buffers; fresh ones get at least `size` bytes of
    /// capacity, and none above `max` (raised to `size`) is pooled.
    pub fn new(keep: usize, size: usize, max: usize) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                free: Mutex::new(Vec::with_capacity(keep)),
                keep,
                size,
                max: max.max(size),
                stats: Counters::default(),
            }),
        }
    }

    /// An empty buffer with room for at least `cap` bytes.
    pub fn take(&self, cap: usize) -> Buf {
        let i = &self.inner;
        if cap < MIN_POOLED || cap > i.max {
            i.stats.unpooled.fetch_add(1, Ordering::Relaxed);
            return Buf::unpooled(cap);
        }
        let reused = i.free.lock().ok().and_then(|mut free| {
            // The smallest free buffer that fits, so large ones stay for large requests.
            let at = free
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= cap)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(at, _)| at)?;
            Some(free.swap_remove(at))
        });
        let vec = match reused {
            Some(mut v) => {
                i.stats.reused.fetch_add(1, Ordering::Relaxed);
                // Length only: the bytes are overwritten by the next read, never zeroed.
                v.clear();
                v
            }
            None => {
                i.stats.fresh.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(cap.max(i.size))
            }
        };
        Buf {
            vec,
            home: Some(Arc::downgrade(&self.inner)),
        }
    }

    /// Runs `f` with this pool as the one [`take`] draws from.
    pub async fn scope<F: Future>(&self, f: F) -> F::Output {
        SCOPE.scope(self.clone(), f).await
    }

    /// What the pool has done so far.
    pub fn stats(&self) -> PoolStats {
        let s = &self.inner.stats;
        PoolStats {
            fresh: s.fresh.load(Ordering::Relaxed),
            reused: s.reused.load(Ordering::Relaxed),
            unpooled: s.unpooled.load(Ordering::Relaxed),
            returned: s.returned.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
        }
    }

    /// Free buffers held now.
    pub fn free(&self) -> usize {
        self.inner.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}

impl Inner {
    fn give_back(&self, vec: Vec<u8>) {
        if vec.capacity() < MIN_POOLED || vec.capacity() > self.max {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(mut free) = self.free.lock() else {
            return;
        };
        if free.len() < self.keep {
            free.push(vec);
            self.stats.returned.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Full: keep the larger of this one and the smallest kept.
        let smallest = free
            .iter()
            .enumerate()
            .min_by_key(|(_, v)| v.capacity())
            .map(|(at, v)| (at, v.capacity()));
        if let Some((at, c)) = smallest {
            if c < vec.capacity() {
                free[at] = vec;
                self.stats.returned.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// An empty buffer with room for at least `cap` bytes, from the pool of the enclosing
/// [`Pool::scope`], or a plain allocation outside any.
pub fn take(cap: usize) -> Buf {
    SCOPE
        .try_with(|p| p.take(cap))
        .unwrap_or_else(|_| Buf::unpooled(cap))
}

/// A buffer being filled; [`Buf::freeze`] makes it a [`Bytes`]. Dropped unfrozen (a
/// failed read), it goes back to its pool at once.
#[derive(Debug)]
pub struct Buf {
    vec: Vec<u8>,
    /// The pool it goes back to; `None` when it is a plain allocation. Weak: a buffer
    /// outliving its run's pool is simply freed.
    home: Option<Weak<Inner>>,
}

impl Buf {
    fn unpooled(cap: usize) -> Buf {
        Buf {
            vec: Vec::with_capacity(cap),
            home: None,
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.vec.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.vec.is_empty()
    }

    /// Room before the buffer must grow.
    pub fn capacity(&self) -> usize {
        self.vec.capacity()
    }

    /// Appends `data` (into the spare capacity: nothing is zeroed first).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.vec.extend_from_slice(data);
    }

    /// Appends up to `n` bytes read from `r`, straight into the spare capacity (the
    /// reader's `read_buf`, no zeroing first); returns how many were read (fewer at EOF).
    pub fn read_from(&mut self, r: impl std::io::Read, n: u64) -> std::io::Result<usize> {
        use std::io::Read as _;
        r.take(n).read_to_end(&mut self.vec)
    }

    /// The bytes, shared; the buffer goes back to its pool when the last clone is dropped.
    pub fn freeze(mut self) -> Bytes {
        let vec = std::mem::take(&mut self.vec);
        match self.home.take() {
            None => Bytes::from(vec),
            Some(home) => Bytes::from_owner(Owned {
                vec,
                home: Some(home),
            }),
        }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(pool) = self.home.take().and_then(|h| h.upgrade()) {
            pool.give_back(std::mem::take(&mut self.vec));
        }
    }
}

/// The owner behind a frozen pooled buffer's [`Bytes`]: only reached through shared
/// references while any `Bytes` lives, dropped (giving the `Vec` back) after the last.
struct Owned {
    vec: Vec<u8>,
    home: Option<Weak<Inner>>,
}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.vec
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(pool) = self.home.take().and_then(|h| h.upgrade()) {
            pool.give_back(std::mem::take(&mut self.vec));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn filled(pool: &Pool, cap: usize, byte: u8) -> Bytes {
        let mut b = pool.take(cap);
        b.extend_from_slice(&vec![byte; cap]);
        b.freeze()
    }

    #[test]
    fn a_returned_buffer_is_reused_without_a_new_allocation() {
        let pool = Pool::new(4, 2 * MIB, 4 * MIB);
        let a = filled(&pool, 2 * MIB, 1);
        let ptr = a.as_ptr();
        drop(a);
        assert_eq!(pool.free(), 1);
        let mut b = pool.take(MIB + 5);
        assert!(b.is_empty(), "a reused buffer starts empty");
        assert!(b.capacity() >= 2 * MIB);
        b.extend_from_slice(&[7; 10]);
        let b = b.freeze();
        assert_eq!(b.as_ptr(), ptr, "the same memory came back");
        assert_eq!(&b[..], &[7; 10]);
        let s = pool.stats();
        assert_eq!((s.fresh, s.reused, s.returned), (1, 1, 1));
    }

    #[test]
    fn the_buffer_returns_only_when_the_last_clone_drops() {
        let pool = Pool::new(4, MIB, MIB);
        let a = filled(&pool, MIB, 3);
        let (c1, c2) = (a.clone(), a.slice(10..20));
        drop(a);
        drop(c1);
        assert_eq!(pool.free(), 0, "a slice still refers to it");
        // Meanwhile a new request gets other memory, and the live bytes stay intact.
        let other = filled(&pool, MIB, 9);
        assert_ne!(other.as_ptr(), c2.as_ptr());
        assert_eq!(&c2[..], &[3; 10]);
        drop(c2);
        assert_eq!(pool.free(), 1);
        drop(other);
        assert_eq!(pool.free(), 2);
        assert_eq!(pool.stats().fresh, 2);
    }

    #[test]
    fn no_buffer_is_handed_out_twice_while_in_use() {
        let pool = Pool::new(8, MIB, MIB);
        let live: Vec<Bytes> = (0..8u8).map(|i| filled(&pool, MIB, i)).collect();
        let mut ptrs: Vec<_> = live.iter().map(|b| b.as_ptr()).collect();
        ptrs.sort();
        ptrs.dedup();
        assert_eq!(ptrs.len(), 8);
        for (i, b) in live.iter().enumerate() {
            assert!(b.iter().all(|&x| x == i as u8));
        }
        drop(live);
        // Reused ones are each handed out once.
        let again: Vec<Buf> = (0..8).map(|_| pool.take(MIB)).collect();
        let mut p2: Vec<_> = again.iter().map(|b| b.vec.as_ptr()).collect();
        p2.sort();
        p2.dedup();
        assert_eq!(p2.len(), 8);
        assert_eq!(pool.stats().reused, 8);
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound() {
        let pool = Pool::new(3, MIB, MIB);
        let live: Vec<Bytes> = (0..10).map(|_| filled(&pool, MIB, 0)).collect();
        drop(live);
        assert_eq!(pool.free(), 3);
        let s = pool.stats();
        assert_eq!((s.fresh, s.returned, s.dropped), (10, 3, 7));
    }

    #[test]
    fn an_unfrozen_buffer_dropped_by_a_failed_read_goes_back() {
        let pool = Pool::new(2, MIB, MIB);
        let mut b = pool.take(MIB);
        b.extend_from_slice(&[1; 100]);
        drop(b);
        assert_eq!(pool.free(), 1);
        let _ = pool.take(MIB);
        assert_eq!(pool.stats().reused, 1);
    }

    #[test]
    fn small_and_oversized_requests_are_not_pooled() {
        let pool = Pool::new(2, MIB, 2 * MIB);
        drop(filled(&pool, 4096, 1));
        drop(filled(&pool, 3 * MIB, 1));
        assert_eq!(pool.free(), 0);
        assert_eq!(pool.stats().unpooled, 2);
        // A fresh pooled buffer gets the part size, so it serves a full part later.
        let b = pool.take(MIB + MIB / 2);
        assert!(b.capacity() >= MIB + MIB / 2);
        let small = pool.take(MIN_POOLED);
        assert!(small.capacity() >= MIB);
    }

    #[test]
    fn the_smallest_fitting_buffer_is_chosen() {
        let pool = Pool::new(4, MIB, 8 * MIB);
        let big = filled(&pool, 8 * MIB, 0);
        let small = filled(&pool, MIB, 0);
        let (pb, ps) = (big.as_ptr(), small.as_ptr());
        drop((big, small));
        let b = pool.take(MIB);
        assert_eq!(b.vec.as_ptr(), ps);
        let b2 = pool.take(2 * MIB);
        assert_eq!(b2.vec.as_ptr(), pb);
    }

    #[test]
    fn a_buffer_outliving_its_pool_is_freed() {
        let pool = Pool::new(2, MIB, MIB);
        let b = filled(&pool, MIB, 5);
        drop(pool);
        assert_eq!(&b[..3], &[5, 5, 5]);
        drop(b);
    }

    #[test]
    fn read_from_fills_the_spare_capacity() {
        let pool = Pool::new(1, MIB, MIB);
        let src: Vec<u8> = (0..MIB + 100).map(|i| (i % 251) as u8).collect();
        let mut b = pool.take(MIB);
        let n = b.read_from(&src[..], MIB as u64).unwrap();
        assert_eq!(n, MIB);
        assert_eq!(b.capacity(), MIB, "no growth past the request");
        let b = b.freeze();
        assert_eq!(&b[..], &src[..MIB]);
        // Short source: fewer bytes.
        drop(b);
        let mut b = pool.take(MIB);
        assert_eq!(b.read_from(&src[..10], MIB as u64).unwrap(), 10);
    }

    #[tokio::test]
    async fn take_draws_from_the_pool_in_scope() {
        let pool = Pool::new(2, MIB, MIB);
        let outside = take(MIB);
        assert!(outside.home.is_none());
        let inside = pool
            .scope(async {
                tokio::task::yield_now().await;
                take(MIB)
            })
            .await;
        assert!(inside.home.is_some());
        drop(inside);
        assert_eq!(pool.free(), 1);
    }
}
