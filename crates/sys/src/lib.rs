//! The only unsafe code of Trellis, in one audited place. Every other crate
//! forbids `unsafe` (the workspace lints); each function here is safe to call
//! and says next to its `unsafe` block why that block is sound.
//!
//! What is here and why it cannot be done safely elsewhere:
//! - [`terminate_with_parent`]: `Command::pre_exec` is unsafe because the
//!   closure runs between fork and exec;
//! - [`release_freed_memory`], [`limit_heap_arenas`], [`unmap_large_blocks`],
//!   [`compact_heap`]: glibc's `malloc_trim` and `mallopt` have no safe
//!   binding;
//! - [`lower_thread_priority`]: `setpriority` for one thread has none either;
//! - [`CountingAlloc`] (feature `counting-alloc`, tests only): a global
//!   allocator is an `unsafe impl`.

#[cfg(feature = "counting-alloc")]
mod counting_alloc;

#[cfg(feature = "counting-alloc")]
pub use counting_alloc::{CountingAlloc, Peak};

use tokio::process::Command;

/// Makes the child `cmd` starts receive SIGTERM when the thread that forked
/// it dies, even if the parent is killed with SIGKILL and cannot stop its
/// children itself: no orphan keeps a port bound.
///
/// The signal is tied to the forking thread, so call this from the thread
/// that lives as long as the parent (e.g. a current-thread runtime's).
pub fn terminate_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; prctl(PR_SET_PDEATHSIG) is a single
    // system call and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
}

/// Returns the free pages of glibc's heap to the kernel (a no-op with other
/// C libraries). A proxy calls it after a config update, whose decoded
/// resources and previous snapshot are megabytes that are free but resident.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes glibc's arena locks itself and only returns
    // pages of free chunks; it touches no memory the program owns.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Lowers the calling thread's scheduling priority to `nice` (0 normal, 19
/// lowest), leaving the process's other threads as they are (Linux: a
/// thread's nice value is its own). A proxy's control thread compiles
/// config updates in runs of milliseconds; lowered, a request thread that
/// wakes up on the same core is run first. Raising a nice value needs no
/// privilege; an error leaves the priority as it was.
pub fn lower_thread_priority(nice: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let tid = nix::unistd::gettid().as_raw();
        let tid = nix::libc::id_t::try_from(tid).map_err(std::io::Error::other)?;
        // SAFETY: setpriority only changes the scheduling priority of the
        // thread `tid` (this one); it touches no memory.
        let rc = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid, nice.clamp(0, 19)) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
    Ok(())
}

/// Makes every thread allocate from at most `arenas` glibc heaps (a no-op
/// with other C libraries); glibc's default is eight per core, one for each
/// thread that allocates. Each arena keeps its own freed memory and its top
/// chunk resident: a proxy's request thread, control thread and helper
/// threads held ~1 MiB more at a churn peak in arenas of their own than in
/// one (docs/benchmarks.md). Call it before other threads start: a thread
/// that already has an arena keeps it.
pub fn limit_heap_arenas(arenas: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::libc::{M_ARENA_MAX, c_int, mallopt};
        let arenas = c_int::try_from(arenas.max(1)).unwrap_or(c_int::MAX);
        // SAFETY: mallopt only sets glibc's allocator parameters, under its
        // own lock; it touches no memory the program owns.
        unsafe {
            mallopt(M_ARENA_MAX, arenas);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Makes glibc's heap hand back what a burst frees, for a server whose
/// bursts free most of what they allocate (a no-op with other C libraries):
/// at most `arenas` arenas (see [`limit_heap_arenas`]) and blocks of 64 KiB
/// and more unmapped when freed ([`unmap_large_blocks`]). trellisd at 2,000
/// proxies: RSS peak 166–173 → 145 MiB in a full push. Call it early:
/// threads that already have an arena keep it.
pub fn compact_heap(arenas: usize) {
    limit_heap_arenas(arenas);
    unmap_large_blocks(64 * 1024);
}

/// Gives blocks of `from` bytes and more their own mapping, returned to the
/// kernel when freed, and returns free memory at the top of the heap from
/// twice that on (a no-op with other C libraries). glibc's defaults move
/// both thresholds up to the largest block freed so far: after one large
/// burst (a proxy's 11 MB metrics scrape with 200 destinations, a control
/// plane's full push) every later block that size comes from the heap and
/// stays resident once freed (docs/benchmarks.md). Setting them keeps them.
pub fn unmap_large_blocks(from: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::libc::{M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, c_int, mallopt};
        let mmap = c_int::try_from(from).unwrap_or(c_int::MAX);
        // SAFETY: mallopt only sets glibc's allocator parameters, under its
        // own lock; it touches no memory the program owns.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, mmap);
            mallopt(M_TRIM_THRESHOLD, mmap.saturating_mul(2));
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = from;
}

#[cfg(test)]
mod tests {
    /// The nice value of the calling thread, from /proc (field 19 of stat).
    #[cfg(target_os = "linux")]
    fn own_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let after_name = stat.rsplit(')').next().expect("fields");
        after_name
            .split_whitespace()
            .nth(16)
            .and_then(|v| v.parse().ok())
            .expect("nice")
    }

    /// How many arenas glibc's heap has (`malloc_info` lists one `<heap>`
    /// each).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn heap_arenas() -> usize {
        use nix::libc::{c_char, fclose, free, malloc_info, open_memstream, size_t};
        let (mut buf, mut len): (*mut c_char, size_t) = (std::ptr::null_mut(), 0);
        // SAFETY: open_memstream writes the buffer's address and length to
        // the two locals; malloc_info writes to the stream, fclose flushes
        // and NUL-terminates the buffer, which is then read once and freed.
        let info = unsafe {
            let stream = open_memstream(&mut buf, &mut len);
            assert!(!stream.is_null(), "open_memstream failed");
            malloc_info(0, stream);
            fclose(stream);
            let info = std::ffi::CStr::from_ptr(buf).to_string_lossy().into_owned();
            free(buf.cast());
            info
        };
        info.matches("<heap nr=").count()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn threads_started_after_the_limit_allocate_from_the_arenas_there_are() {
        super::limit_heap_arenas(1);
        let before = heap_arenas();
        // All alive at once, so that none can take over another's arena.
        let all = std::sync::Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let all = all.clone();
                std::thread::spawn(move || {
                    let block = std::hint::black_box(vec![1u8; 4096]);
                    all.wait();
                    block.len()
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(heap_arenas(), before, "a thread made an arena of its own");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn lowers_the_calling_thread_only() {
        let before = own_nice();
        let lowered = std::thread::spawn(|| {
            super::lower_thread_priority(10).expect("raising nice needs no privilege");
            own_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, 10);
        assert_eq!(own_nice(), before, "the other threads keep theirs");
    }

    /// The process's anonymous resident memory, in bytes.
    #[cfg(target_os = "linux")]
    fn rss_anon() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssAnon");
        kib * 1024
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_large_block_freed_after_a_larger_one_is_returned() {
        const MIB: usize = 1024 * 1024;
        super::unmap_large_blocks(256 * 1024);
        // glibc's own thresholds would now rise to 16 MiB: the next 8 MiB
        // block would come from the heap and stay resident once freed.
        drop(std::hint::black_box(vec![1u8; 16 * MIB]));
        let before = rss_anon();
        let block = std::hint::black_box(vec![1u8; 8 * MIB]);
        assert!(rss_anon() >= before + 7 * MIB, "the block is resident");
        drop(block);
        let kept = rss_anon().saturating_sub(before);
        assert!(
            kept < MIB,
            "{kept} bytes of the freed block stayed resident"
        );
    }
}
