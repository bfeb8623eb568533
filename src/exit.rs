//! How a process ends: the outcomes a run can have and the exit code each one gets. Exit codes
//! are part of the interface schedulers script against (the README and `run --help` list
//! them); every one the process returns is an [`Exit`], decided here, and this file imports
//! nothing from the crate, so everything above can use it.

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

/// How the process ends, as its exit code says. The variants are ranked by how much attention
/// they need, least first, so the code of a job of several groups is the greatest of theirs
/// ([`Exit::combine`]): a broken job (3) or input (2), then a refused key (4), an unreachable
/// exchange (5), an interruption (143, then 130), orders possibly left open (1), and 0 only when
/// every group is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Exit {
    /// 0: every account swept, nothing left rejected, verified flat (or swept, with --no-verify).
    Ok,
    /// 1: the run finished, but some account failed, kept rejected orders or is not verified
    /// flat; or the exchange did not answer what was asked outside a run.
    Incomplete,
    /// 130 (128 + SIGINT).
    Interrupted,
    /// 143 (128 + SIGTERM).
    Terminated,
    /// 5: no connection to the exchange could be made before any reply, so nothing was
    /// cancelled. Fix the URL, the network or the proxy, and rerun.
    Unreachable,
    /// 4: the exchange refused the key or the request as configured (signature, role, nonce
    /// mode, IP allow-list, redirect, unknown endpoint): nothing will work until the key or the
    /// configuration is fixed.
    Refused,
    /// 2: bad input or configuration; nothing was sent to the exchange.
    BadInput,
    /// 3: an internal, database or environment error.
    Internal,
}

impl Exit {
    /// Every exit, least urgent first.
    pub const ALL: &[Exit] = &[
        Exit::Ok,
        Exit::Incomplete,
        Exit::Interrupted,
        Exit::Terminated,
        Exit::Unreachable,
        Exit::Refused,
        Exit::BadInput,
        Exit::Internal,
    ];

    /// The number the process exits with, the summary prints and the database records.
    pub const fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Incomplete => 1,
            Exit::BadInput => 2,
            Exit::Internal => 3,
            Exit::Refused => 4,
            Exit::Unreachable => 5,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }

    /// The exit of a run that ended with `status`, stopped by `signal` if any, its key halted
    /// for `halt` if it was.
    pub fn of_run(status: RunStatus, signal: Option<StopSignal>, halt: Option<KeyHalt>) -> Exit {
        match status {
            RunStatus::Completed => Exit::Ok,
            RunStatus::Incomplete if halt == Some(KeyHalt::Unreachable) => Exit::Unreachable,
            RunStatus::Incomplete => Exit::Incomplete,
            RunStatus::Refused => Exit::Refused,
            RunStatus::Interrupted => signal.unwrap_or(StopSignal::Interrupt).into(),
            // No process settles a run as running or died; read back, either is a run that was
            // broken off, and never 0.
            RunStatus::Aborted | RunStatus::Running | RunStatus::Died => Exit::Internal,
        }
    }

    /// One exit for a job of several groups: the one that needs the most attention.
    pub fn combine(exits: impl IntoIterator<Item = Exit>) -> Exit {
        exits.into_iter().max().unwrap_or(Exit::Ok)
    }
}

impl From<StopSignal> for Exit {
    fn from(signal: StopSignal) -> Exit {
        match signal {
            StopSignal::Interrupt => Exit::Interrupted,
            StopSignal::Terminate => Exit::Terminated,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> std::process::ExitCode {
        // Every code is below 256.
        std::process::ExitCode::from(exit.code() as u8)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// The summary's `exit_code`: the number.
impl serde::Serialize for Exit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(self.code())
    }
}

/// `invocations.exit_code`: the number.
impl rusqlite::ToSql for Exit {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.code().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_exits_with_its_most_urgent_group() {
        use Exit::*;
        assert_eq!(Exit::combine([]), Ok);
        assert_eq!(Exit::combine([Ok, Ok]), Ok);
        assert_eq!(Exit::combine([Ok, Incomplete]), Incomplete);
        assert_eq!(Exit::combine([Terminated, Incomplete, Ok]), Terminated);
        assert_eq!(Exit::combine([Incomplete, Refused, Interrupted]), Refused);
        assert_eq!(Exit::combine([Refused, Internal, Ok]), Internal);
        assert_eq!(
            Exit::combine([Unreachable, Terminated, Incomplete]),
            Unreachable
        );
        assert_eq!(Exit::combine([Unreachable, Refused]), Refused);
        // The order the README and --help give: 3, 2, 4, 5, 143, 130, 1, then 0.
        let most_urgent_first: Vec<i32> = Exit::ALL.iter().rev().map(|e| e.code()).collect();
        assert_eq!(most_urgent_first, [3, 2, 4, 5, 143, 130, 1, 0]);
        let mut sorted = Exit::ALL.to_vec();
        sorted.sort();
        assert_eq!(sorted, Exit::ALL, "ALL lists the exits in their order");
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
                assert_ne!(
                    Exit::of_run(status, signal, None),
                    Exit::Ok,
                    "{status:?} {signal:?}"
                );
            }
        }
        assert_eq!(Exit::of_run(RunStatus::Completed, None, None), Exit::Ok);
        assert_eq!(
            Exit::of_run(RunStatus::Interrupted, Some(StopSignal::Terminate), None),
            Exit::Terminated
        );
        assert_eq!(
            Exit::of_run(RunStatus::Interrupted, None, None),
            Exit::Interrupted
        );
        let unreached = Some(KeyHalt::Unreachable);
        assert_eq!(
            Exit::of_run(RunStatus::Incomplete, None, unreached),
            Exit::Unreachable
        );
        assert_eq!(
            Exit::of_run(
                RunStatus::Interrupted,
                Some(StopSignal::Terminate),
                unreached
            ),
            Exit::Terminated,
            "a signal still decides an interrupted run's code"
        );
        for &status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("finished"), None);
    }

    #[test]
    fn the_documented_codes_stand() {
        let codes: Vec<i32> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 130, 143, 5, 4, 2, 3]);
        assert_eq!(serde_json::to_string(&Exit::Terminated).unwrap(), "143");
    }
}
