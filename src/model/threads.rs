//! The calling thread's own intra-op thread count (`csrc/threads.cpp`), for scoring streams
//! that each run on fewer threads than the process default without changing that default.
use std::ffi::c_int;

extern "C" {
    fn cutpaste_set_thread_intraop(n: c_int) -> c_int;
}

/// While alive, the creating thread's libtorch operators use `n` intra-op threads; dropping it
/// restores the thread's previous count. Other threads, and threads started later, keep the
/// process default ([`tch::set_num_threads`]).
#[derive(Debug)]
pub(crate) struct ThreadIntraOp {
    previous: usize,
}

impl ThreadIntraOp {
    /// Sets this thread's count to `n`; `None` (nothing changed) where libtorch's threads are
    /// not per-thread OpenMP settings, or `n` is 0.
    pub(crate) fn set(n: usize) -> Option<Self> {
        let previous = usize::try_from(tch::get_num_threads()).ok()?;
        (set_here(n)? == n).then_some(Self { previous })
    }
}

impl Drop for ThreadIntraOp {
    fn drop(&mut self) {
        set_here(self.previous);
    }
}

/// Sets the calling thread's count; what libtorch then reports for it.
fn set_here(n: usize) -> Option<usize> {
    let n = c_int::try_from(n).ok().filter(|&n| n > 0)?;
    // SAFETY: plain C call with an integer argument; libtorch is loaded (we link it).
    let got = unsafe { cutpaste_set_thread_intraop(n) };
    usize::try_from(got).ok().filter(|&g| g > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs an operator big enough for libtorch to split it over its threads.
    fn parallel_op() {
        let x = tch::Tensor::ones([512, 512], (tch::Kind::Float, tch::Device::Cpu));
        let _ = x.matmul(&x).sum(tch::Kind::Float);
    }

    #[test]
    fn the_count_is_the_threads_own_and_restored_on_drop() {
        let process = tch::get_num_threads();
        if process < 2 {
            eprintln!("skipped: one intra-op thread, nothing to set");
            return;
        }
        std::thread::spawn(move || {
            parallel_op(); // this thread's lazy init has run: it must not undo ours
            let guard = ThreadIntraOp::set(1).expect("per-thread OpenMP threads in libtorch");
            parallel_op();
            assert_eq!(tch::get_num_threads(), 1);
            // another thread, started now, has the process count
            let other = std::thread::spawn(tch::get_num_threads).join().unwrap();
            assert_eq!(other, process);
            drop(guard);
            assert_eq!(tch::get_num_threads(), process);
        })
        .join()
        .unwrap();
        // a fresh thread setting it before any operator keeps it through its first one
        std::thread::spawn(move || {
            let _guard = ThreadIntraOp::set(1).expect("per-thread OpenMP threads in libtorch");
            parallel_op();
            assert_eq!(tch::get_num_threads(), 1);
        })
        .join()
        .unwrap();
        assert_eq!(tch::get_num_threads(), process);
    }
}
