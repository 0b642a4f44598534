//! The process's open-files limit. Every viewer, node connection and splice pipe is a
//! descriptor, and the usual soft default (1024) would refuse viewers long before
//! `server.max_connections`: the soft limit is raised to the hard one at start, as Go's runtime
//! and nginx's `worker_rlimit_nofile` do.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The kernel's usual ceiling (`fs.nr_open`), for a hard limit of "unlimited".
const NR_OPEN: u64 = 1 << 20;

/// Raises the soft limit to the hard one (bounded by [`NR_OPEN`]); returns the soft limit in
/// force afterwards.
pub fn raise() -> u64 {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let soft = current.unwrap_or(NR_OPEN);
    let want = maximum.unwrap_or(NR_OPEN).min(NR_OPEN);
    if want <= soft {
        return soft;
    }
    let new = Rlimit {
        current: Some(want),
        maximum,
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => {
            tracing::info!(from = soft, to = want, "open files limit raised");
            want
        }
        Err(e) => {
            tracing::warn!(limit = soft, error = %e, "open files limit could not be raised");
            soft
        }
    }
}

#[cfg(test)]
mod tests {
    use rustix::process::{getrlimit, Resource};

    /// The soft limit ends at the hard one (bounded by `NR_OPEN`), never below where it was.
    /// (Where soft and hard are equal this only checks that; tests/gateway.rs starts the
    /// binary with a low soft limit.)
    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let before = getrlimit(Resource::Nofile);
        let soft = before.current.unwrap_or(super::NR_OPEN);
        let hard = before.maximum.unwrap_or(super::NR_OPEN).min(super::NR_OPEN);
        let after = super::raise();
        assert_eq!(after, soft.max(hard));
        assert_eq!(getrlimit(Resource::Nofile).current, Some(after));
    }
}
