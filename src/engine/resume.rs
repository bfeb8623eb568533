//! `--resume`: which earlier run to finish, whether it may be finished today, and with what.
//!
//! The run's own configuration comes back from the database (its latest invocation's options),
//! with the flags and key given now laid over it. Two safeguards decide before anything is
//! sent: `latest` finishes only a run younger than the resume window (an old run left behind
//! is not today's job), and the key must be the run's own.

use std::path::Path;

use crate::client::Credentials;
use crate::config::SweepConfig;
use crate::error::Error;
use crate::exit::{Exit, RunStatus};
use crate::store::{self, Cause, store_error};

use super::job::{GroupJob, SweepSummary, Target};

/// What the command line asks to resume.
pub struct ResumeRequest<'a> {
    pub db: &'a Path,
    /// `latest` or a run id.
    pub run: &'a str,
    /// Restricts `latest` (and an id) to this group's runs.
    pub group: Option<&'a str>,
    /// Also pick up accounts the exchange refused for good.
    pub retry_permanent: bool,
    /// `latest` resumes only a run that started less than this many hours ago.
    pub within_hours: f64,
}

pub enum ResumePlan {
    Sweep(GroupJob),
    /// The run is finished or has nothing left that a resume may pick up: nothing is sent and
    /// nothing written; its summary is printed as it stands.
    NothingToDo(SweepSummary),
}

/// The plan for resuming `request.run`; `over` lays the flags given now and the key on top of
/// the run's stored configuration.
pub fn resume_target(
    request: &ResumeRequest,
    over: impl FnOnce(SweepConfig) -> Result<(SweepConfig, Credentials), Error>,
) -> Result<ResumePlan, Error> {
    let ResumeRequest {
        db,
        run,
        group,
        retry_permanent,
        within_hours,
    } = *request;
    let conn = store::open_read_only(db)?;
    let db_error = |e: rusqlite::Error| store_error(db, e);
    let no_run = || Error::NoSuchRun {
        db: db.to_path_buf(),
        run: run.to_owned(),
        group: group.map(str::to_owned),
        to_resume: true,
    };
    let run_id = store::resolve_run(&conn, run, group)
        .map_err(db_error)?
        .ok_or_else(no_run)?;
    let stored = store::resumable(&conn, run_id, retry_permanent)
        .map_err(db_error)?
        .ok_or_else(no_run)?;
    if run == "latest" && stored.age_secs > within_hours * 3600.0 {
        let whose = group.map(|g| format!("group {g:?}'s ")).unwrap_or_default();
        return Err(Error::Usage(format!(
            "{}: {whose}latest run (#{run_id}, started {}, {:.1} h ago) is older than --resume-within {within_hours} h, so today's job did not start it; nothing was resumed. Give its id (--resume {run_id}) to resume it anyway",
            db.display(),
            stored.started_at,
            stored.age_secs / 3600.0,
        )));
    }
    let mut base: SweepConfig = serde_json::from_str(&stored.options_json)
        .map_err(|source| store_error(db, Cause::Options { run_id, source }))?;
    base.base_url = stored.base_url.clone();
    let (config, credentials) = over(base)?;
    if credentials.fingerprint() != stored.key_fingerprint {
        return Err(Error::Usage(format!(
            "run {run_id} was made with key {}, but the key given now is {}; resume with the same key",
            stored.key_fingerprint,
            credentials.fingerprint()
        )));
    }
    // A run whose process died after its sweep may have died in its hold: the resume holds again.
    let hold_again =
        !config.hold.is_zero() && matches!(stored.status, RunStatus::Running | RunStatus::Died);
    if stored.accounts.is_empty() && !hold_again {
        let totals = store::run_totals(&conn, run_id).map_err(db_error)?;
        let dirty = totals.accounts_total - totals.accounts_skipped - totals.accounts_ok;
        let hint = if dirty > 0 && !retry_permanent {
            format!(
                "; {dirty} accounts were refused by the exchange for good (see `gemini-sweep report --run {run_id} --only failed`; --retry-permanent retries them)"
            )
        } else {
            String::new()
        };
        tracing::warn!(
            run_id,
            "run {run_id} ({}) has nothing left to resume{hint}; nothing sent, nothing written",
            stored.status
        );
        // A run whose listing cannot vouch for the group is never clean, however its accounts
        // ended.
        let status = if dirty > 0 || totals.listing_note.is_some() {
            RunStatus::Incomplete
        } else {
            RunStatus::Completed
        };
        return Ok(ResumePlan::NothingToDo(SweepSummary {
            exit_code: Exit::of_run(status, None, None),
            totals,
            invocation_id: None,
            wall_ms: 0,
            db: db.display().to_string(),
            nothing_to_resume: true,
            record_unwritten: false,
        }));
    }
    tracing::info!(
        run_id,
        accounts = stored.accounts.len(),
        "resuming run {run_id} (status {}, last worked on by pid {})",
        stored.status,
        stored.pid
    );
    Ok(ResumePlan::Sweep(GroupJob {
        config,
        credentials,
        target: Target::Resume {
            run_id,
            accounts: stored.accounts,
        },
    }))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use secrecy::SecretString;

    use super::*;
    use crate::store::{NewRun, NewRunAccount};

    const KEY: &str = "master-resume-test";

    fn credentials(key: &str) -> Credentials {
        Credentials {
            key: key.into(),
            secret: SecretString::from("s3cret".to_string()),
        }
    }

    /// A database holding one run of `accounts` (name, enabled), none of them attempted.
    async fn database(dir: &Path, accounts: &[(&str, bool)]) -> (PathBuf, i64) {
        let path = dir.join("sweep.db");
        let config = SweepConfig::defaults(PathBuf::from("accounts.csv"), path.clone());
        let (store, writer) = store::open(&path).unwrap();
        let (run_id, _) = store
            .begin_run(NewRun {
                base_url: "https://api.gemini.com/".into(),
                key_fingerprint: credentials(KEY).fingerprint(),
                group_name: "default".into(),
                options_json: serde_json::to_string(&config).unwrap(),
                verify: true,
                accounts: accounts
                    .iter()
                    .enumerate()
                    .map(|(i, (account, enabled))| NewRunAccount {
                        account: (*account).into(),
                        csv_line: i as u64 + 2,
                        note: None,
                        enabled: *enabled,
                    })
                    .collect(),
            })
            .await
            .unwrap();
        drop(store);
        writer.join();
        (path, run_id)
    }

    fn request<'a>(db: &'a Path, run: &'a str) -> ResumeRequest<'a> {
        ResumeRequest {
            db,
            run,
            group: None,
            retry_permanent: false,
            within_hours: 20.0,
        }
    }

    fn with_key(
        key: &str,
    ) -> impl FnOnce(SweepConfig) -> Result<(SweepConfig, Credentials), Error> {
        let credentials = credentials(key);
        move |config| Ok((config, credentials))
    }

    fn age(db: &Path, run_id: i64, started_at: &str) {
        rusqlite::Connection::open(db)
            .unwrap()
            .execute(
                "UPDATE runs SET started_at = ?1 WHERE run_id = ?2",
                rusqlite::params![started_at, run_id],
            )
            .unwrap();
    }

    #[tokio::test]
    async fn an_unfinished_run_resumes_its_own_accounts_with_its_own_settings() {
        let dir = tempfile::tempdir().unwrap();
        let (db, run_id) = database(dir.path(), &[("acct-1", true), ("acct-2", false)]).await;
        let plan = resume_target(&request(&db, "latest"), with_key(KEY)).unwrap();
        let ResumePlan::Sweep(job) = plan else {
            panic!("an unattempted account is left to resume");
        };
        let Target::Resume {
            run_id: resumed,
            accounts,
        } = job.target
        else {
            panic!("a resume target");
        };
        assert_eq!(resumed, run_id);
        assert_eq!(accounts, ["acct-1"]);
        assert_eq!(job.config.base_url, "https://api.gemini.com/");
    }

    #[tokio::test]
    async fn latest_is_refused_past_the_window_and_an_id_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (db, run_id) = database(dir.path(), &[("acct-1", true)]).await;
        age(&db, run_id, "2020-01-01T00:00:00.000Z");
        let err = resume_target(&request(&db, "latest"), with_key(KEY))
            .err()
            .expect("an old latest run is not today's job");
        assert_eq!(err.exit(), Exit::BadInput, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("older than --resume-within 20 h"), "{msg}");
        assert!(msg.contains(&format!("--resume {run_id}")), "{msg}");
        let by_id = run_id.to_string();
        assert!(matches!(
            resume_target(&request(&db, &by_id), with_key(KEY)),
            Ok(ResumePlan::Sweep(_))
        ));
    }

    #[tokio::test]
    async fn another_key_cannot_resume_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let (db, run_id) = database(dir.path(), &[("acct-1", true)]).await;
        let err = resume_target(&request(&db, "latest"), with_key("master-another"))
            .err()
            .expect("another key is refused");
        assert_eq!(err.exit(), Exit::BadInput, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("run {run_id} was made with key")),
            "{msg}"
        );
        assert!(!msg.contains("s3cret"), "{msg}");
    }

    #[tokio::test]
    async fn a_missing_run_or_group_is_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = database(dir.path(), &[("acct-1", true)]).await;
        for (run, group) in [("99", None), ("not-a-run", None), ("latest", Some("other"))] {
            let request = ResumeRequest {
                group,
                ..request(&db, run)
            };
            let err = resume_target(&request, with_key(KEY))
                .err()
                .expect("nothing to resume");
            assert_eq!(err.exit(), Exit::BadInput, "{err}");
            assert!(err.to_string().contains("to resume"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_run_with_nothing_left_exits_by_what_it_holds_and_sends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (db, run_id) = database(dir.path(), &[("acct-1", false)]).await;
        let plan = resume_target(&request(&db, "latest"), with_key(KEY)).unwrap();
        let ResumePlan::NothingToDo(summary) = plan else {
            panic!("a run of disabled accounts has nothing to resume");
        };
        assert!(summary.nothing_to_resume);
        assert_eq!(summary.totals.run_id, run_id);
        assert_eq!(summary.exit_code, Exit::Ok);

        rusqlite::Connection::open(&db)
            .unwrap()
            .execute(
                "UPDATE runs SET listing_note = 'a page added nothing' WHERE run_id = ?1",
                [run_id],
            )
            .unwrap();
        let plan = resume_target(&request(&db, "latest"), with_key(KEY)).unwrap();
        let ResumePlan::NothingToDo(summary) = plan else {
            panic!("still nothing to resume");
        };
        assert_eq!(
            summary.exit_code,
            Exit::Incomplete,
            "a listing that cannot vouch for the group is never clean"
        );
    }
}
