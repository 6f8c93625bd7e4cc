//! The memory allocator: mimalloc, set before `main` to give freed memory back to the system at once.
//!
//! Requests are built on the runtime's threads and freed on the store's writer and sync threads. glibc's
//! per-thread arenas serve that pattern slowly: a third of the runtime threads' time went to `_int_malloc`,
//! `free` and `malloc_consolidate` under the store bench (see BENCHMARKS.md, "Store", session 25).
//! mimalloc as it comes keeps what it frees for a second and commits its arenas whole: a daemon holding
//! 1,000,000 queued messages then held 98 MB at ready instead of 46 (`bench/bench.py restart`). With the two
//! options below set before the first allocation it held 46 MB again; set at the start of `main`, 68 MB.

use std::ffi::{c_int, c_long};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's options by their place in `mi_option_e` (mimalloc.h, v3); the Rust bindings name them as an
// older version numbered them. `the_options_enum_is_laid_out_as_assumed` checks the layout.
/// `mi_option_arena_eager_commit`: commit a whole arena when it is reserved (default 2: where the system
/// overcommits).
const ARENA_EAGER_COMMIT: c_int = 4;
/// `mi_option_purge_delay`: milliseconds before freed memory is given back (default 1,000).
const PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
}

/// Runs as a constructor, before `main` and before the Rust runtime allocates, in every binary linked with
/// this crate: an arena reserved before the options are set stays committed whole. `.init_array` is ELF's
/// list of constructors, run by the dynamic loader on Linux, the only system the daemon is built for.
#[used]
#[unsafe(link_section = ".init_array")]
static SET_BEFORE_MAIN: extern "C" fn() = {
    extern "C" fn return_freed_memory() {
        // SAFETY: setting an option only stores its value, which mimalloc reads as it needs it.
        unsafe {
            mi_option_set(ARENA_EAGER_COMMIT, 0);
            mi_option_set(PURGE_DELAY, 0);
        }
    }
    return_freed_memory
};

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" {
        fn mi_option_get(option: c_int) -> c_long;
    }

    fn option(option: c_int) -> c_long {
        // SAFETY: reading an option only loads its value.
        unsafe { mi_option_get(option) }
    }

    /// The constructor ran before the test, and the options around the two set read their documented
    /// defaults (`os_tag` 100, `max_errors` and `max_warnings` 32, `retry_on_oom` 400): an enum laid out
    /// otherwise would have moved them.
    #[test]
    fn the_options_enum_is_laid_out_as_assumed() {
        assert_eq!((option(ARENA_EAGER_COMMIT), option(PURGE_DELAY)), (0, 0));
        assert_eq!(
            [18, 19, 20, 27].map(option),
            [100, 32, 32, 400],
            "os_tag, max_errors, max_warnings, retry_on_oom"
        );
    }
}
