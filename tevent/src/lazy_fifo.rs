//! The memory rules shared by the FIFOs whose removed entries stay in place
//! until they are reached (the post queue, a queue's entries): removing
//! from the middle only marks an entry, so these decide when the marked
//! ones are dropped and when an emptied FIFO gives its memory back.

use std::collections::VecDeque;

/// An emptied FIFO with more room than this gives it back.
const SHRINK_ABOVE: usize = 4096;

/// Whether the stale entries are most of a FIFO holding `len` entries of
/// which `live` are live: time to drop them. Dropping them then costs
/// O(1) per removal, amortised.
#[inline]
pub(crate) fn mostly_stale(len: usize, live: usize) -> bool {
    len > 2 * live + 32
}

/// Give back the memory of a burst once `fifo` is empty.
#[inline]
pub(crate) fn release_if_empty<T>(fifo: &mut VecDeque<T>) {
    if fifo.capacity() > SHRINK_ABOVE && fifo.is_empty() {
        shrink(fifo);
    }
}

#[cold]
fn shrink<T>(fifo: &mut VecDeque<T>) {
    fifo.shrink_to(SHRINK_ABOVE / 16);
}
