//! The pages: what each shows and where it reads it. Each view renders the content of the
//! page's `main`, which its live stream sends again whenever it changes.
//!
//! | view | reads |
//! |---|---|
//! | runs | the [`crate::hub::Hub`]'s runs (run-pipeline requests followed as `quorum follow` does) |
//! | run | one run: its DAG, jobs, who ran them, gates, releases |
//! | job | the live tail (NIP-90 `partial`), the full log (Blossom, re-hashed), the quorum's commitments, reveals, tally, attestation and mandate (§15), the gate (8701) |
//! | releases | release bindings (8700) of a repository, their files' mirrors (1063) and the verdict of `quorum verify`'s own code |
//! | market | DVM announcements (NIP-89), their operators (§6.1) and what they answered lately |

use std::collections::BTreeMap;

use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nostr::{EventId, PublicKey};

use crate::html::{esc, short};
use crate::{Dashboard, UiError};

/// A page of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Runs(RunFilter),
    Run(EventId),
    Job(EventId, String),
    /// A run known from its CI status events: coordinator and run id.
    Ci(PublicKey, String),
    Releases(Option<RepoCoordinate>),
    Market,
}

/// The runs list's filter (`?repo=&branch=&status=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub status: Option<String>,
}

impl View {
    /// The view at `path` (without `/live`) and `query`; `None` for no page.
    pub fn parse(path: &str, query: &BTreeMap<String, String>) -> Result<View, UiError> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let given = |key: &str| query.get(key).filter(|v| !v.is_empty()).cloned();
        let run_id = |text: &str| {
            EventId::from_hex(text)
                .map_err(|_| UiError::BadRequest(format!("{text:?} is not a run id")))
        };
        match parts.as_slice() {
            [""] | ["runs"] => Ok(View::Runs(RunFilter {
                repo: given("repo"),
                branch: given("branch"),
                status: given("status"),
            })),
            ["run", id] => Ok(View::Run(run_id(id)?)),
            ["run", id, "job", job] => Ok(View::Job(run_id(id)?, (*job).to_string())),
            ["releases"] => match given("repo") {
                None => Ok(View::Releases(None)),
                Some(repo) => RepoCoordinate::parse_user(&repo)
                    .map(|r| View::Releases(Some(r)))
                    .map_err(|_| {
                        UiError::BadRequest(format!(
                            "{repo:?} is not a repository (30617:<owner hex>:<d> or naddr1…)"
                        ))
                    }),
            },
            ["market"] => Ok(View::Market),
            ["ci", coordinator, run] => {
                let coordinator = PublicKey::from_hex(coordinator).map_err(|_| {
                    UiError::BadRequest(format!("{coordinator:?} is not a public key"))
                })?;
                Ok(View::Ci(coordinator, (*run).to_string()))
            }
            _ => Err(UiError::NotFound(path.to_string())),
        }
    }

    pub fn title(&self) -> String {
        match self {
            View::Runs(_) => "Runs".into(),
            View::Run(id) => format!("Run {}", short(&id.to_hex())),
            View::Job(_, job) => format!("Job {job}"),
            View::Ci(_, run) => format!("Run {}", short(run)),
            View::Releases(Some(repo)) => format!("Releases of {}", repo.identifier),
            View::Releases(None) => "Releases".into(),
            View::Market => "Market".into(),
        }
    }

    pub fn section(&self) -> crate::html::Section {
        use crate::html::Section;
        match self {
            View::Runs(_) | View::Run(_) | View::Job(..) | View::Ci(..) => Section::Runs,
            View::Releases(_) => Section::Releases,
            View::Market => Section::Market,
        }
    }
}

/// Renders the content of `view`'s `main`.
mod job;
mod market;
mod releases;
mod runs;

pub use releases::{Check, FileVerdict, Mirrors, checks};

pub async fn render(dashboard: &Dashboard, view: &View) -> Result<String, UiError> {
    match view {
        View::Runs(filter) => Ok(runs::runs(dashboard, filter)),
        View::Run(id) => runs::run(dashboard, id),
        View::Job(id, job) => job::job_page(dashboard, id, job).await,
        View::Ci(coordinator, run) => runs::ci_run(dashboard, coordinator, run).await,
        View::Releases(None) => releases::releases_index(dashboard).await,
        View::Releases(Some(repo)) => releases::releases(dashboard, repo).await,
        View::Market => market::market(dashboard).await,
    }
}

fn badge(class: &str, label: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", esc(label))
}

fn dvm_link(key: &str) -> String {
    format!(
        "<a class=\"key\" href=\"/market#dvm-{k}\" title=\"{k}\">{s}</a>",
        k = esc(key),
        s = esc(short(key))
    )
}

fn key(key: &str) -> String {
    format!(
        "<code class=\"key\" title=\"{k}\">{s}</code>",
        k = esc(key),
        s = esc(short(key))
    )
}
