//! Lock helpers shared by every layer: a poisoned lock (a panic while it was held,
//! already answered with EIO) must not take the rest of the mount down with it.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Locks `m`, taking over the data if a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits on `cv` for at most `d`, surviving poisoning like [`lock`].
pub fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>, d: Duration) -> MutexGuard<'a, T> {
    cv.wait_timeout(g, d)
        .map(|(g, _)| g)
        .unwrap_or_else(|p| p.into_inner().0)
}
