//! Running independent jobs on every core, keeping results in input order, and
//! reading a stream on a thread of its own while its consumer works.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The cores this process may use (1 when that cannot be told).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Applies `f` to every item on all cores; `progress(done, total)` follows along.
/// The first error wins, and the workers stop taking new items once one is seen.
pub fn try_map<T, R, E>(
    items: &[T],
    f: impl Fn(usize, &T) -> Result<R, E> + Sync,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let order: Vec<usize> = (0..items.len()).collect();
    try_map_in_order(items, &order, f, progress)
}

/// The indices of `sizes`, largest first (ties in index order): an order for
/// [`try_map_in_order`] that starts the longest jobs first.
pub fn largest_first(sizes: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    order
}

/// [`try_map`], with the workers taking items in `order` (a permutation of the
/// indices), so the longest jobs can start first instead of leaving one core busy at
/// the end. Results still come in input order. Of several errors, the one at the
/// lowest index wins.
pub fn try_map_in_order<T, R, E>(
    items: &[T],
    order: &[usize],
    f: impl Fn(usize, &T) -> Result<R, E> + Sync,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    assert_eq!(
        order.len(),
        items.len(),
        "the order is a permutation of the items"
    );
    let workers = cores().min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R, E>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let r = f(i, &items[i]);
                    let failed = r.is_err();
                    results
                        .lock()
                        .expect("no worker panics while holding the lock")[i] = Some(r);
                    progress(done.fetch_add(1, Ordering::SeqCst) + 1, items.len());
                    if failed {
                        next.store(items.len(), Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let results = results.into_inner().expect("workers finished");
    let mut out = Vec::with_capacity(items.len());
    let mut skipped = false;
    for r in results {
        match r {
            Some(Ok(r)) => out.push(r),
            Some(Err(e)) => return Err(e),
            // Items are left only once an error stopped the workers; that error comes
            // later in input order.
            None => skipped = true,
        }
    }
    assert!(!skipped, "an item was left without an error to show for it");
    Ok(out)
}

/// Applies `f` to every item on all cores and hands each result to `consume`, on
/// the calling thread, in input order and as soon as it and those before it are
/// ready. Workers run at most `ahead` items past the last one consumed, which bounds
/// the results waiting. An error from `consume` stops the workers taking new items
/// and is returned; a panic in `f` is resumed on the calling thread.
pub fn for_each_in_order<T, R, E>(
    items: &[T],
    ahead: usize,
    f: impl Fn(usize, &T) -> R + Sync,
    mut consume: impl FnMut(usize, R) -> Result<(), E>,
) -> Result<(), E>
where
    T: Sync,
    R: Send,
{
    let ahead = ahead.max(1);
    let line = Mutex::new(InOrder {
        next: 0,
        consumed: 0,
        ready: std::collections::BTreeMap::new(),
        stop: false,
    });
    let changed = std::sync::Condvar::new();
    let lock = || line.lock().expect("no thread panics holding the lock");
    let wait = |guard| {
        changed
            .wait(guard)
            .expect("no thread panics holding the lock")
    };
    // Workers wake to take items or to leave.
    let stop = || {
        lock().stop = true;
        changed.notify_all();
    };
    std::thread::scope(|s| {
        for _ in 0..cores().min(items.len()) {
            s.spawn(|| loop {
                let i = {
                    let mut st = lock();
                    while !st.stop && st.next < items.len() && st.next >= st.consumed + ahead {
                        st = wait(st);
                    }
                    if st.stop || st.next >= items.len() {
                        return;
                    }
                    st.next += 1;
                    st.next - 1
                };
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i, &items[i])));
                lock().ready.insert(i, r);
                changed.notify_all();
            });
        }
        let mut outcome = Ok(());
        for i in 0..items.len() {
            let r = {
                let mut st = lock();
                loop {
                    match st.ready.remove(&i) {
                        Some(r) => break r,
                        None => st = wait(st),
                    }
                }
            };
            let r = r.unwrap_or_else(|panic| {
                stop();
                std::panic::resume_unwind(panic)
            });
            if let Err(e) = consume(i, r) {
                outcome = Err(e);
                break;
            }
            lock().consumed = i + 1;
            changed.notify_all();
        }
        stop();
        outcome
    })
}

/// Where [`for_each_in_order`] stands.
struct InOrder<R> {
    /// The next item a worker takes.
    next: usize,
    /// Items handed to the consumer.
    consumed: usize,
    /// Results not yet consumed (or a worker's panic).
    ready: std::collections::BTreeMap<usize, std::thread::Result<R>>,
    /// Set when the consumer is done, early or not.
    stop: bool,
}

/// Bytes handed from the reading thread at a time.
const AHEAD_CHUNK: usize = 1 << 20;
/// Chunks read before the consumer takes them: what bounds the memory.
const AHEAD_CHUNKS: usize = 4;

/// A reader whose source is read on another thread, up to a few MiB ahead: a
/// decompressor then runs beside whoever parses its output. An error of the source
/// comes out where it happened in the stream; dropping the reader stops the thread
/// at its next chunk.
pub struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
    ended: bool,
}

impl ReadAhead {
    /// Starts reading `source` on a new thread.
    pub fn new(mut source: impl std::io::Read + Send + 'static) -> Self {
        use std::io::Read;
        let (send, chunks) = std::sync::mpsc::sync_channel(AHEAD_CHUNKS);
        std::thread::spawn(move || loop {
            let mut chunk = Vec::with_capacity(AHEAD_CHUNK);
            let read = (&mut source)
                .take(AHEAD_CHUNK as u64)
                .read_to_end(&mut chunk);
            let last = !matches!(read, Ok(n) if n > 0);
            let item = read.map(|_| chunk);
            if send.send(item).is_err() || last {
                return;
            }
        });
        ReadAhead {
            chunks,
            current: Vec::new(),
            at: 0,
            ended: false,
        }
    }
}

impl std::io::Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.current.len() && !self.ended {
            // The source's end comes as an empty chunk; a thread gone without one
            // would otherwise pass for a complete stream.
            let chunk = self.chunks.recv().map_err(|_| {
                std::io::Error::other("the thread reading ahead stopped mid-stream")
            })??;
            (self.ended, self.current, self.at) = (chunk.is_empty(), chunk, 0);
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_and_reports_errors() {
        let items: Vec<u32> = (0..100).collect();
        let doubled = super::try_map(&items, |_, &x| Ok::<_, ()>(x * 2), |_, _| {}).unwrap();
        assert_eq!(doubled, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        let err = super::try_map(
            &items,
            |_, &x| if x == 42 { Err(x) } else { Ok(x) },
            |_, _| {},
        );
        assert_eq!(err, Err(42));
    }

    #[test]
    fn an_error_is_never_lost_whatever_the_order() {
        let items: Vec<u32> = (0..64).collect();
        // Late items first: when item 3 fails, lower items may never have started, and
        // the result must be the error, not the items before the gap.
        let order: Vec<usize> = (0..items.len()).rev().collect();
        let fail_at_3 = |_, &x: &u32| if x == 3 { Err(x) } else { Ok(x) };
        assert_eq!(
            super::try_map_in_order(&items, &order, fail_at_3, |_, _| {}),
            Err(3)
        );
        let all = super::try_map_in_order(&items, &order, |_, &x| Ok::<_, ()>(x), |_, _| {});
        assert_eq!(all.unwrap(), items);
    }

    #[test]
    fn read_ahead_gives_the_same_bytes_and_the_error_where_it_was() {
        use std::io::Read;
        let bytes: Vec<u8> = (0..3 * super::AHEAD_CHUNK + 17).map(|i| i as u8).collect();
        let mut out = Vec::new();
        super::ReadAhead::new(std::io::Cursor::new(bytes.clone()))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, bytes);

        /// Gives `left` bytes, then fails.
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("corrupt block"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut out = Vec::new();
        let err = super::ReadAhead::new(Broken(super::AHEAD_CHUNK + 5))
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(err.to_string(), "corrupt block");
        assert!(out.len() <= super::AHEAD_CHUNK + 5 && out.iter().all(|&b| b == 7));
    }

    #[test]
    fn results_are_consumed_in_order_and_a_consumer_error_stops_the_rest() {
        let items: Vec<u64> = (0..200).collect();
        // Early items slowest, so later ones finish first and must wait their turn.
        let slow = |_, &x: &u64| {
            std::thread::sleep(std::time::Duration::from_micros(200 - x));
            x * 3
        };
        let mut seen = Vec::new();
        super::for_each_in_order(&items, 3, slow, |i, r| {
            seen.push((i, r));
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(
            seen,
            items
                .iter()
                .map(|&x| (x as usize, x * 3))
                .collect::<Vec<_>>()
        );

        let taken = std::sync::atomic::AtomicUsize::new(0);
        let counted = |_, &x: &u64| {
            taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            x
        };
        let stop_at_5 = |i, _| if i == 5 { Err(i) } else { Ok(()) };
        assert_eq!(
            super::for_each_in_order(&items, 3, counted, stop_at_5),
            Err(5)
        );
        // Never more than `ahead` past what was consumed: 5 consumed, item 5 refused.
        assert!(
            taken.into_inner() <= 5 + 1 + 3,
            "workers ran on after the error"
        );
    }
}
