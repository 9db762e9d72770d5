//! What `ponder`'s exit status says, so that scripts can tell a mistake in their own
//! command line from a server that refused the request from a cluster that could not be
//! reached (docs/cli.md, "Exit status"):
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure (a local file, an internal error) |
//! | 2 | usage: a flag or argument is wrong (clap's own status for parse errors) |
//! | 3 | refused: the server answered with an error about the request or the caller (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAUTHENTICATED, ...) |
//! | 4 | transport: the server could not be reached or is not serving (connection refused, TLS failure, UNAVAILABLE) |
//! | 5 | deadline: the request ran out of time (DEADLINE_EXCEEDED) |

use tonic::Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Other = 1,
    Usage = 2,
    Refused = 3,
    Transport = 4,
    Deadline = 5,
}

/// A failure that knows its exit status; everything else exits 1.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// A usage error (exit 2) saying what to fix.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Failure {
        exit: Exit::Usage,
        message: message.into(),
    }
    .into()
}

/// A failure to reach the server (exit 4).
pub fn transport(message: impl Into<String>) -> anyhow::Error {
    Failure {
        exit: Exit::Transport,
        message: message.into(),
    }
    .into()
}

/// Which exit a gRPC status code means.
pub fn exit_of(code: Code) -> Exit {
    match code {
        Code::DeadlineExceeded => Exit::Deadline,
        Code::Unavailable => Exit::Transport,
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unauthenticated
        | Code::Cancelled
        | Code::Aborted => Exit::Refused,
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => Exit::Other,
    }
}

/// The exit status for `error` (1 unless it carries a [`Failure`]).
pub fn code(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map_or(Exit::Other, |f| f.exit) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_own_status() {
        assert_eq!(code(&usage("--timeout must be positive")), 2);
        assert_eq!(code(&transport("cannot reach")), 4);
        assert_eq!(code(&anyhow::anyhow!("reading a file")), 1);
        assert_eq!(exit_of(Code::ResourceExhausted), Exit::Refused);
        assert_eq!(exit_of(Code::Unavailable), Exit::Transport);
        assert_eq!(exit_of(Code::DeadlineExceeded), Exit::Deadline);
        let wrapped = usage("bad").context("while parsing");
        assert_eq!(code(&wrapped), 2, "found through context");
    }
}
