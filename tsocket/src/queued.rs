//! The step every queue helper shares (`sendto_queue`, `writev_queue`,
//! `readv_pdu_queue`): enter the queue, and deliver a request that finished
//! at once from the loop.

use tevent::{Queue, QueueEntry, Req};

/// Add `req` to `queue` with [`Queue::add_optimize_empty`] (so `trigger`
/// runs at once on an empty queue), keep its entry in the slot `entry`
/// picks from the state, and post the request if it already finished
/// (triggered and done at once, or refused by the queue).
#[track_caller]
pub(crate) fn enter_queue<S: 'static, T: 'static, F>(
    req: Req<S, T>,
    queue: &Queue,
    // Generic, not a fn pointer: a fn item is zero-sized, so storing it as
    // the trigger allocates nothing.
    trigger: F,
    entry: impl FnOnce(&mut S) -> &mut Option<QueueEntry>,
) -> Req<S, T>
where
    F: FnMut(&Req<S, T>) + 'static,
{
    match queue.add_optimize_empty(&req, trigger) {
        Ok(e) => *entry(&mut req.state_mut()) = Some(e),
        Err(err) => {
            req.error(err.errno().unwrap_or(libc::EINVAL) as u64);
        }
    }
    if !req.is_in_progress() {
        return req.post();
    }
    req
}
