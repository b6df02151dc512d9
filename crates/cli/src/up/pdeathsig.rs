//! Children of `trellis up` die with it, even if it is killed with SIGKILL and
//! cannot stop them itself: no orphan keeps a port bound.
#![allow(unsafe_code)]

use tokio::process::Command;

pub fn terminate_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; prctl(PR_SET_PDEATHSIG) is a single
    // system call and allocates nothing. The signal is tied to the thread that
    // forks: `trellis up` runs a current-thread runtime, so that is the main thread.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
}
