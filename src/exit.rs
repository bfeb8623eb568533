//! How a process ends: the outcomes a run can have and the exit code each one gets. Exit codes
//! are part of the interface schedulers script against (the README lists them); every one the
//! process returns is named and decided here, and this file imports nothing from the crate, so
//! everything above can use it.

/// Every account swept, nothing left rejected, verified flat (or swept, with --no-verify).
pub const OK: i32 = 0;
/// The run finished, but some account failed, kept rejected orders or is not verified flat.
pub const INCOMPLETE: i32 = 1;
/// Bad input or configuration; nothing was sent to the exchange.
pub const BAD_INPUT: i32 = 2;
/// Internal, database or environment error.
pub const INTERNAL: i32 = 3;
/// The exchange refused the key or the request as configured (signature, role, nonce mode,
/// IP allow-list, redirect, unknown endpoint): the run stopped sending at once, and nothing
/// will work until the key or the configuration is fixed.
pub const REFUSED: i32 = 4;
/// The exchange could not be reached: no connection to it could be made before any reply, so
/// nothing was cancelled. The run stopped early; fix the URL, the network or the proxy, and rerun.
pub const UNREACHABLE: i32 = 5;
/// Interrupted by SIGINT (128 + 2).
pub const SIGINT: i32 = 130;
/// Interrupted by SIGTERM (128 + 15).
pub const SIGTERM: i32 = 143;

/// The signal that stopped a run, if any; decides 130 versus 143.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

/// Why a key stopped sending before its run was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHalt {
    /// The exchange refused the key or the configuration (exit 4).
    Refused,
    /// No connection to the exchange could be made before any reply (exit 5).
    Unreachable,
    /// The exchange asked the key to wait longer than a run waits (exit 1).
    TooLongAPause,
    /// The audit trail could not be written (exit 3).
    Aborted,
}

/// Status of a run, as `runs.status` and `invocations.status` spell it: the one type for the
/// stored column, what a run is settled with, and the summary's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// An invocation is working on it (or its process died and nothing has noticed yet).
    Running,
    Completed,
    Incomplete,
    Interrupted,
    Refused,
    Aborted,
    /// Its process vanished; the next invocation on the database found it and said so.
    Died,
}

impl RunStatus {
    /// Every status, in the order the metrics list them.
    pub const ALL: &[RunStatus] = &[
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Incomplete,
        RunStatus::Interrupted,
        RunStatus::Refused,
        RunStatus::Aborted,
        RunStatus::Died,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Incomplete => "incomplete",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Refused => "refused",
            RunStatus::Aborted => "aborted",
            RunStatus::Died => "died",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        Self::ALL.iter().copied().find(|s| s.as_str() == text)
    }
}

/// What went wrong before or outside a run, as far as the exit code cares; each error type
/// says which of these it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The user's input cannot be used; nothing was sent.
    BadInput,
    /// Our fault, the database's or the environment's.
    Internal,
    /// The exchange refused the key or the configuration.
    Refused,
    /// The exchange did not answer what was asked: what it should have done may not be done.
    Unavailable,
}

/// The exit code of a failure outside a run.
pub fn for_failure(failure: Failure) -> i32 {
    match failure {
        Failure::BadInput => BAD_INPUT,
        Failure::Internal => INTERNAL,
        Failure::Refused => REFUSED,
        Failure::Unavailable => INCOMPLETE,
    }
}

/// The exit code of a process stopped by `signal`.
pub fn for_signal(signal: StopSignal) -> i32 {
    match signal {
        StopSignal::Interrupt => SIGINT,
        StopSignal::Terminate => SIGTERM,
    }
}

/// The exit code of a run that ended with `status`, stopped by `signal` if any, its key halted
/// for `halt` if it was.
pub fn for_run(status: RunStatus, signal: Option<StopSignal>, halt: Option<KeyHalt>) -> i32 {
    match status {
        RunStatus::Completed => OK,
        RunStatus::Incomplete if halt == Some(KeyHalt::Unreachable) => UNREACHABLE,
        RunStatus::Incomplete => INCOMPLETE,
        RunStatus::Refused => REFUSED,
        RunStatus::Interrupted => for_signal(signal.unwrap_or(StopSignal::Interrupt)),
        // No process settles a run as running or died; read back, either is a run that was
        // broken off, and never 0.
        RunStatus::Aborted | RunStatus::Running | RunStatus::Died => INTERNAL,
    }
}

/// One code for a job of several groups: the one that needs the most attention. A broken
/// job (3) or input (2) first, then a refused key (4), an unreachable exchange (5), an
/// interruption, orders possibly left open (1), and 0 only when every group is 0.
pub fn combine(codes: impl IntoIterator<Item = i32>) -> i32 {
    let rank = |code: i32| match code {
        OK => 0,
        INCOMPLETE => 1,
        SIGINT => 2,
        SIGTERM => 3,
        UNREACHABLE => 4,
        REFUSED => 5,
        BAD_INPUT => 6,
        _ => 7,
    };
    codes.into_iter().max_by_key(|c| rank(*c)).unwrap_or(OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_exits_with_its_most_urgent_group() {
        assert_eq!(combine([]), OK);
        assert_eq!(combine([OK, OK]), OK);
        assert_eq!(combine([OK, INCOMPLETE]), INCOMPLETE);
        assert_eq!(combine([SIGTERM, INCOMPLETE, OK]), SIGTERM);
        assert_eq!(combine([INCOMPLETE, REFUSED, SIGINT]), REFUSED);
        assert_eq!(combine([REFUSED, INTERNAL, OK]), INTERNAL);
        assert_eq!(combine([UNREACHABLE, SIGTERM, INCOMPLETE]), UNREACHABLE);
        assert_eq!(combine([UNREACHABLE, REFUSED]), REFUSED);
    }

    #[test]
    fn only_a_completed_run_exits_zero() {
        for &status in RunStatus::ALL {
            if status == RunStatus::Completed {
                continue;
            }
            for signal in [
                None,
                Some(StopSignal::Interrupt),
                Some(StopSignal::Terminate),
            ] {
                assert_ne!(for_run(status, signal, None), OK, "{status:?} {signal:?}");
            }
        }
        assert_eq!(for_run(RunStatus::Completed, None, None), OK);
        assert_eq!(
            for_run(RunStatus::Interrupted, Some(StopSignal::Terminate), None),
            SIGTERM
        );
        assert_eq!(for_run(RunStatus::Interrupted, None, None), SIGINT);
        let unreached = Some(KeyHalt::Unreachable);
        assert_eq!(for_run(RunStatus::Incomplete, None, unreached), UNREACHABLE);
        assert_eq!(
            for_run(
                RunStatus::Interrupted,
                Some(StopSignal::Terminate),
                unreached
            ),
            SIGTERM,
            "a signal still decides an interrupted run's code"
        );
        for &status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("finished"), None);
    }
}
