//! Recycled request storage.
//!
//! A request's storage is one heap allocation. When the last handle of a
//! request goes, the storage is emptied (the state, result, callbacks and
//! timers are dropped exactly as they would be when freed) and kept by the
//! context, so that the next
//! [`Req::new`] of the same state and result types on that context takes it
//! instead of allocating. A program that runs requests one after another (a
//! client loop, a PDU reader) therefore allocates nothing per request in
//! steady state.
//!
//! The pool is small and bounded: at most [`MAX_CELLS`] entries, each at
//! most [`MAX_CELL_BYTES`] bytes (larger storage is freed as usual), and
//! only the newest few entries are searched for a matching type, so a take
//! or a give costs a handful of instructions. When the pool is full, a type
//! none of whose cells is among the newest entries pushes the oldest out
//! (so a burst of one type does not keep the others out for good), while
//! the same type is simply freed. Pooled storage is freed with its context.
//!
//! Weak references may outlive the request they were taken from: a
//! [`WeakReq`] or a sub-request's parent carries the storage's generation
//! (raised when the storage is emptied), a pending post its post number,
//! so none of them reaches the next request on the same storage. The end
//! time and the queue place go before anything else when a request is
//! freed.
//!
//! [`WeakReq`]: crate::WeakReq
//! [`Req::new`]: crate::Req::new

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::rc::Rc;

/// How many emptied request cells a context keeps.
pub(crate) const MAX_CELLS: usize = 32;

/// Request cells larger than this are not kept (a state with a large inline
/// buffer would otherwise pin its memory).
pub(crate) const MAX_CELL_BYTES: usize = 1024;

/// How many of the newest entries a take looks at for a matching type.
const SEARCH_DEPTH: usize = 4;

/// A context's emptied request cells, newest last.
#[derive(Default)]
pub(crate) struct ReqPool {
    cells: RefCell<Vec<Pooled>>,
}

/// An emptied cell and its type (kept beside it, so that a search reads a
/// field instead of calling through the vtable).
struct Pooled {
    type_id: TypeId,
    cell: Rc<dyn Any>,
}

impl ReqPool {
    /// An emptied cell of type `C`, if one of the newest entries is one.
    /// The returned `Rc` is the only strong reference to its cell (weak
    /// ones may remain: they check the cell's generation).
    #[inline]
    pub(crate) fn take<C: Any>(&self) -> Option<Rc<C>> {
        let mut cells = self.cells.try_borrow_mut().ok()?;
        let len = cells.len();
        let found = (len.saturating_sub(SEARCH_DEPTH)..len)
            .rev()
            .find(|&i| cells[i].type_id == TypeId::of::<C>())?;
        let pooled = cells.swap_remove(found);
        let raw = Rc::into_raw(pooled.cell).cast::<C>();
        // SAFETY: the entry's `type_id` is the type its cell was given as
        // (`give`), so the allocation holds a `C`; `raw` comes from
        // `Rc::into_raw` of that allocation.
        Some(unsafe { Rc::from_raw(raw) })
    }

    /// Whether a cell of type `C` given now would be kept: when there is
    /// room, or when the pool is full but holds none of `C` among its
    /// newest entries (a burst of one type must not keep the others out
    /// for good: the oldest entry then makes way).
    #[inline]
    pub(crate) fn wants<C: Any>(&self) -> bool {
        self.cells
            .try_borrow()
            .is_ok_and(|cells| cells.len() < MAX_CELLS || !Self::holds(&cells, TypeId::of::<C>()))
    }

    /// Whether one of the newest entries is of type `type_id`.
    #[inline]
    fn holds(cells: &[Pooled], type_id: TypeId) -> bool {
        cells
            .iter()
            .rev()
            .take(SEARCH_DEPTH)
            .any(|p| p.type_id == type_id)
    }

    /// Keep an emptied cell (making way for it by freeing the oldest if the
    /// pool is full), or free it if the pool is in use.
    #[inline]
    pub(crate) fn give<C: Any>(&self, cell: Rc<C>) {
        let Ok(mut cells) = self.cells.try_borrow_mut() else {
            return;
        };
        if cells.len() >= MAX_CELLS {
            drop(cells);
            self.give_evicting(cell);
            return;
        }
        if cells.capacity() == 0 {
            cells.reserve_exact(MAX_CELLS);
        }
        cells.push(Pooled {
            type_id: TypeId::of::<C>(),
            cell,
        });
    }

    /// [`give`](ReqPool::give) to a full pool: the oldest cell makes way.
    #[cold]
    #[inline(never)]
    fn give_evicting<C: Any>(&self, cell: Rc<C>) {
        let oldest = {
            let Ok(mut cells) = self.cells.try_borrow_mut() else {
                return;
            };
            let oldest = cells.remove(0);
            cells.push(Pooled {
                type_id: TypeId::of::<C>(),
                cell,
            });
            oldest
        };
        // Freed with the pool not borrowed (freeing an emptied cell runs no
        // user code, but no drop runs under a borrow here).
        drop(oldest);
    }

    /// How many cells are kept (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.cells.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::{MAX_CELLS, MAX_CELL_BYTES};
    use crate::{Context, Deadline, Req, ReqError, ReqState};

    fn pooled(ctx: &Context) -> usize {
        ctx.inner().req_pool.len()
    }

    /// Counts its drops.
    struct Tracked(Rc<Cell<u32>>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn received_request_storage_is_reused_by_the_next_request() {
        let ctx = Context::new().unwrap();
        let first: Req<u32, u32> = Req::new(&ctx, 1);
        let storage = Rc::as_ptr(first.cell());
        first.done(10);
        assert_eq!(first.recv(), Ok(10));
        drop(first);
        assert_eq!(pooled(&ctx), 1);

        let second: Req<u32, u32> = Req::new(&ctx, 2);
        assert_eq!(pooled(&ctx), 0);
        assert_eq!(Rc::as_ptr(second.cell()), storage, "same storage");
        // Nothing of the first request shows through.
        assert!(second.is_in_progress());
        assert_eq!(second.status(), ReqState::InProgress);
        assert_eq!(second.is_error(), Some(ReqError::InProgress));
        assert_eq!(*second.state(), 2);
        assert!(!second.has_callback());
        assert!(!second.cancel(), "no cancel function");
    }

    #[test]
    fn dropping_frees_contents_at_once_and_runs_cleanup_once() {
        let ctx = Context::new().unwrap();
        let state_drops = Rc::new(Cell::new(0));
        let callback_drops = Rc::new(Cell::new(0));
        let cleanups = Rc::new(Cell::new(Vec::new()));
        let req: Req<Tracked, ()> = Req::new(&ctx, Tracked(state_drops.clone()));
        let captured = Tracked(callback_drops.clone());
        req.set_callback(move |_| {
            let _ = &captured;
            panic!("a dropped request's callback must not run");
        });
        let seen = cleanups.clone();
        req.set_cleanup_fn(move |_, state| {
            let mut v = seen.take();
            v.push(state);
            seen.set(v);
        });
        drop(req);
        assert_eq!(pooled(&ctx), 1);
        assert_eq!(state_drops.get(), 1, "state dropped with the last handle");
        assert_eq!(
            callback_drops.get(),
            1,
            "callback dropped with the last handle"
        );
        assert_eq!(cleanups.take(), vec![ReqState::Received]);

        let next: Req<Tracked, ()> = Req::new(&ctx, Tracked(state_drops.clone()));
        assert_eq!(pooled(&ctx), 0);
        assert!(next.done(()));
        assert_eq!(
            cleanups.take(),
            Vec::new(),
            "the old cleanup function is gone"
        );
        drop(next);
        assert_eq!(state_drops.get(), 2);
    }

    #[test]
    fn a_weak_reference_does_not_reach_a_later_request_on_the_same_storage() {
        let ctx = Context::new().unwrap();
        let first: Req<u32, ()> = Req::new(&ctx, 1);
        let weak = first.downgrade();
        let storage = Rc::as_ptr(first.cell());
        drop(first);
        assert!(weak.upgrade().is_none(), "the request is gone");
        let second: Req<u32, ()> = Req::new(&ctx, 2);
        assert_eq!(Rc::as_ptr(second.cell()), storage, "same storage");
        assert!(
            weak.upgrade().is_none(),
            "not the request it was taken from"
        );
        let weak_second = second.downgrade();
        assert_eq!(*weak_second.upgrade().unwrap().state(), 2);
    }

    #[test]
    fn a_sub_request_does_not_call_back_a_later_request_on_its_parents_storage() {
        let ctx = Context::new().unwrap();
        let calls = Rc::new(Cell::new(0));
        let parent: Req<u32, ()> = Req::new(&ctx, 1);
        let child: Req<(), ()> = Req::new(&ctx, ());
        let c = calls.clone();
        child.set_parent_callback(&parent, move |_, _| c.set(c.get() + 1));
        drop(parent);
        // The parent's storage now holds another request of its types.
        let other: Req<u32, ()> = Req::new(&ctx, 2);
        assert_eq!(pooled(&ctx), 0);
        child.done(());
        assert_eq!(calls.get(), 0, "the parent is gone: no call");
        assert!(other.is_in_progress());
    }

    #[test]
    fn a_request_of_other_types_allocates_its_own() {
        let ctx = Context::new().unwrap();
        drop(Req::<u32, ()>::new(&ctx, 1));
        assert_eq!(pooled(&ctx), 1);
        let other: Req<u64, ()> = Req::new(&ctx, 2);
        assert_eq!(pooled(&ctx), 1, "the u32 request's storage stays");
        drop(other);
        assert_eq!(pooled(&ctx), 2);
        let again: Req<u32, ()> = Req::new(&ctx, 3);
        assert_eq!(pooled(&ctx), 1);
        assert_eq!(*again.state(), 3);
    }

    #[test]
    fn the_pool_is_bounded() {
        let ctx = Context::new().unwrap();
        let reqs: Vec<Req<u32, ()>> = (0..MAX_CELLS as u32 + 10)
            .map(|i| Req::new(&ctx, i))
            .collect();
        drop(reqs);
        assert_eq!(pooled(&ctx), MAX_CELLS);

        let big: Req<[u8; MAX_CELL_BYTES], ()> = Req::new(&ctx, [0; MAX_CELL_BYTES]);
        drop(big);
        assert_eq!(pooled(&ctx), MAX_CELLS, "large storage is freed");
    }

    #[test]
    fn reused_storage_runs_a_whole_life_again() {
        let ctx = Context::new().unwrap();
        let calls = Rc::new(Cell::new(0));
        for round in 0..3u32 {
            let req: Req<u32, u32> = Req::new(&ctx, round);
            assert_eq!(pooled(&ctx), 0, "round {round} reuses the storage");
            req.done(round * 2);
            let req = req.post();
            let seen = calls.clone();
            req.set_callback(move |req| {
                assert_eq!(req.recv(), Ok(round * 2));
                seen.set(seen.get() + 1);
            });
            for _ in 0..3 {
                if calls.get() == round {
                    ctx.loop_once().unwrap();
                }
            }
            assert_eq!(calls.get(), round + 1);
            assert_eq!(req.status(), ReqState::Received);
        }
        assert_eq!(pooled(&ctx), 1);
        // One with an end time that was reset (its timer is gone), then a
        // fresh one on the same storage that must not time out.
        let req: Req<u32, u32> = Req::new(&ctx, 0);
        req.set_endtime(Deadline::Asap);
        req.reset_endtime();
        drop(req);
        assert_eq!(pooled(&ctx), 1, "no end time left to refer to it");
        let req: Req<u32, u32> = Req::new(&ctx, 0);
        assert_eq!(pooled(&ctx), 0);
        let timer = ctx.add_timer(Deadline::Asap, |_, _, _| {});
        ctx.loop_once().unwrap();
        drop(timer);
        assert!(req.is_in_progress());
    }

    /// Records, when dropped, whether its context could still be reached.
    struct Probe {
        weak: crate::WeakContext,
        seen: Rc<Cell<Option<bool>>>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.seen.set(Some(self.weak.upgrade().is_some()));
        }
    }

    #[test]
    fn a_context_whose_last_handle_a_state_drops_dies_at_that_moment() {
        let ctx = Context::new().unwrap();
        let seen = Rc::new(Cell::new(None));
        let probe = Probe {
            weak: ctx.downgrade(),
            seen: seen.clone(),
        };
        // The state holds the context's last handle, dropped before the
        // probe: the probe must find the context gone, as after a free.
        let req: Req<(Context, Probe), ()> = Req::new(&ctx, (ctx.clone(), probe));
        drop(ctx);
        drop(req);
        assert_eq!(seen.get(), Some(false));
    }

    #[test]
    fn a_leaked_state_borrow_does_not_reach_the_next_request() {
        let ctx = Context::new().unwrap();
        let a: Req<u32, u32> = Req::new(&ctx, 1);
        std::mem::forget(a.state_mut());
        drop(a);
        let b: Req<u32, u32> = Req::new(&ctx, 2);
        assert_eq!(pooled(&ctx), 0, "the storage was reused");
        assert_eq!(b.try_state().map(|s| *s), Some(2));
    }

    #[test]
    fn a_burst_of_one_type_does_not_keep_other_types_out() {
        let ctx = Context::new().unwrap();
        let burst: Vec<Req<u32, ()>> = (0..MAX_CELLS as u32).map(|i| Req::new(&ctx, i)).collect();
        drop(burst);
        assert_eq!(pooled(&ctx), MAX_CELLS);
        // Another type is kept (the oldest cell makes way) and reused.
        drop(Req::<u64, ()>::new(&ctx, 1));
        assert_eq!(pooled(&ctx), MAX_CELLS);
        let other: Req<u64, ()> = Req::new(&ctx, 2);
        assert_eq!(pooled(&ctx), MAX_CELLS - 1, "taken from the pool");
        drop(other);
        // The burst's own type does not push others out once it is there.
        let more: Vec<Req<u32, ()>> = (0..2).map(|i| Req::new(&ctx, i)).collect();
        drop(more);
        let again: Req<u64, ()> = Req::new(&ctx, 3);
        assert_eq!(*again.state(), 3);
        assert_eq!(pooled(&ctx), MAX_CELLS - 1, "the u64 cell was still there");
    }
}
