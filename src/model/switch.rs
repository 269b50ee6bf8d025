//! A process-wide on/off switch for an optional kernel, on by default: turned off by its
//! environment variable set to `0`, or in code (code wins over the environment).
use std::sync::atomic::{AtomicU8, Ordering};

/// 0: not decided yet (read the environment), 1: on, 2: off.
pub(crate) struct Switch {
    state: AtomicU8,
    env: &'static str,
}

impl Switch {
    /// A switch read from the environment variable `env` on first use.
    pub(crate) const fn new(env: &'static str) -> Self {
        Self {
            state: AtomicU8::new(0),
            env,
        }
    }

    /// Turns it on or off for this process.
    pub(crate) fn set(&self, on: bool) {
        self.state.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    }

    /// Whether it is on: the last [`Switch::set`], else not `0` in the environment.
    pub(crate) fn on(&self) -> bool {
        if self.state.load(Ordering::Relaxed) == 0 {
            let off = std::env::var(self.env).is_ok_and(|v| v.trim() == "0");
            // a concurrent set() wins over the environment
            let state = if off { 2 } else { 1 };
            let _ = self
                .state
                .compare_exchange(0, state, Ordering::Relaxed, Ordering::Relaxed);
        }
        self.state.load(Ordering::Relaxed) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_decides_until_code_sets_it() {
        // variables no other code reads
        std::env::set_var("CUTPASTE_TEST_SWITCH_OFF", "0");
        std::env::set_var("CUTPASTE_TEST_SWITCH_ON", "1");
        let off = Switch::new("CUTPASTE_TEST_SWITCH_OFF");
        let on = Switch::new("CUTPASTE_TEST_SWITCH_ON");
        let unset = Switch::new("CUTPASTE_TEST_SWITCH_UNSET");
        assert!(!off.on());
        assert!(on.on());
        assert!(unset.on(), "on by default");
        off.set(true);
        on.set(false);
        assert!(off.on());
        assert!(!on.on());
    }
}
