//! A global allocator that counts allocations per thread, so a test can show
//! that a path allocates nothing while other tests run on other threads, or
//! how much memory it holds at most.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Bytes allocated minus bytes freed by this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// The highest `LIVE` since [`CountingAlloc::peak_in`] began.
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// The largest single allocation since [`CountingAlloc::peak_in`] began.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, counting `alloc` and `realloc` calls of the thread.
/// Install with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

/// What a closure held at most (see [`CountingAlloc::peak_in`]).
#[derive(Clone, Copy, Debug)]
pub struct Peak {
    /// The most bytes it held at once beyond what the thread held before.
    pub bytes: usize,
    /// Its largest single allocation.
    pub largest: usize,
}

impl CountingAlloc {
    /// How many allocations the current thread made while running `f`.
    pub fn allocations_in(f: impl FnOnce()) -> u64 {
        let before = ALLOCATIONS.with(Cell::get);
        f();
        ALLOCATIONS.with(Cell::get) - before
    }

    /// The most memory the current thread held while running `f` (what it
    /// frees on another thread is not seen).
    pub fn peak_in(f: impl FnOnce()) -> Peak {
        let before = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(before));
        LARGEST.with(|l| l.set(0));
        f();
        Peak {
            bytes: usize::try_from(PEAK.with(Cell::get) - before).unwrap_or(0),
            largest: LARGEST.with(Cell::get),
        }
    }
}

fn grew(from: usize, to: usize) {
    LIVE.with(|l| {
        let live = l.get() + to as isize - from as isize;
        l.set(live);
        PEAK.with(|p| p.set(p.get().max(live)));
    });
    LARGEST.with(|l| l.set(l.get().max(to)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are const-initialized thread-locals without a destructor, so
// touching them neither allocates nor re-enters the allocator.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        grew(0, layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.with(|l| l.set(l.get() - layout.size() as isize));
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        grew(layout.size(), new_size);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
