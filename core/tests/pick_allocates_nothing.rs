//! A pick allocates nothing: a counting global allocator watches this thread while it picks
//! with every strategy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use clusterkit::{BalancerOptions, Cluster, Node, Strategy};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // try_with: the thread-local may be gone during thread teardown.
        let _ = COUNTING.try_with(|c| {
            if c.get() {
                let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
            }
        });
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = COUNTING.try_with(|c| {
            if c.get() {
                let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
            }
        });
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCS.with(|a| a.get()))
}

#[test]
fn picks_do_not_allocate() {
    let keys: Vec<Vec<u8>> = (0..512).map(|i| format!("user:{i}").into_bytes()).collect();
    for strategy in Strategy::ALL {
        for weighted in [false, true] {
            let nodes = (0..50).map(|i| {
                Node::new(format!("n{i}"), "127.0.0.1", 7000 + i)
                    .unwrap()
                    .with_weight(if weighted { 1 + (i as u32 % 4) } else { 1 })
                    .unwrap()
            });
            let mut options = BalancerOptions::new(strategy);
            if strategy.is_hashing() && weighted {
                options = options.with_bounded_load(1.25);
            }
            let pool = Cluster::with_nodes("p", options, nodes).unwrap();
            let lb = pool.balancer();
            // Warm up: the thread's RNG seed and arc-swap's per-thread slot are set up once.
            for k in &keys {
                drop(lb.pick().unwrap());
                drop(lb.pick_for(k).unwrap());
            }
            let (checked, allocs) = counted(|| {
                let mut held = 0usize;
                for round in 0..20 {
                    for k in &keys {
                        let a = lb.pick().unwrap();
                        let b = lb.pick_for(k).unwrap();
                        held += a.port() as usize + b.port() as usize;
                        if round % 2 == 0 {
                            a.success(std::time::Duration::from_micros(10));
                            b.failure();
                        }
                    }
                }
                held
            });
            assert!(checked > 0);
            assert_eq!(
                allocs, 0,
                "{strategy} (weighted: {weighted}) allocated {allocs} times"
            );
        }
    }
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that never counts.
    let (_, allocs) = counted(|| Box::new(1u64));
    assert!(allocs >= 1);
}
