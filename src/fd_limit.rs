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
    #[test]
    fn the_soft_limit_ends_at_least_where_it_was_and_at_most_at_the_hard_one() {
        let before = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let after = super::raise();
        assert!(after >= before.current.unwrap_or(super::NR_OPEN));
        if let Some(hard) = before.maximum {
            assert!(after <= hard);
        }
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now.current, Some(after));
    }
}
