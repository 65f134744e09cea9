//! Running independent jobs on every core, keeping results in input order.

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
    let workers = cores().min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R, E>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= items.len() {
                    break;
                }
                let r = f(i, &items[i]);
                let failed = r.is_err();
                results
                    .lock()
                    .expect("no worker panics while holding the lock")[i] = Some(r);
                progress(done.fetch_add(1, Ordering::SeqCst) + 1, items.len());
                if failed {
                    next.store(items.len(), Ordering::SeqCst);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for r in results.into_inner().expect("workers finished") {
        match r {
            Some(r) => out.push(r?),
            None => break,
        }
    }
    Ok(out)
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
}
