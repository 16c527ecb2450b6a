//! Pipeline-as-code for Quorum CI: `.quorum/pipeline.yml` → parse → lint → [`Plan`].
//!
//! A repository describes its pipeline in `.quorum/pipeline.yml`, in a dialect that should feel
//! familiar to GitHub Actions users. [`parse`] reads it, checks everything it can without
//! touching the network, and compiles it to a [`Plan`]: a serialisable DAG of jobs in a
//! deterministic order, which is all the router ever executes (woodpecker's split of
//! frontend and backend). The crate is pure: no I/O beyond the text it is given, no tokio, no
//! Nostr networking.
//!
//! # Example
//!
//! A test job, a reproducible build that 2 of 3 independent builders must agree on, a
//! malware scan by any NIP-90 DVM (kind 5500) fed the build's artifact URL, a maintainer
//! approval that shows the build and the scan, and a release of the build's artifact:
//!
//! ```yaml
//! name: release
//!
//! on:
//!   push:
//!     branches: [main, "release/**"]
//!     tags: ["v*"]
//!   manual:
//!     inputs:
//!       reason:
//!         description: Why this run was started by hand
//!         required: false
//!         default: routine
//!
//! jobs:
//!   test:
//!     name: Unit tests
//!     mode: naive
//!     timeout: 10m
//!     steps:
//!       - name: Lint
//!         run: cargo clippy --locked -- -D warnings
//!       - run: cargo test --locked
//!
//!   build:
//!     name: Reproducible build
//!     needs: test
//!     run: |
//!       cargo build --release --locked
//!       mkdir -p out && cp target/release/app out/app
//!     env:
//!       CARGO_TERM_COLOR: never
//!       RUN_REASON: ${{ inputs.reason }}
//!     secrets: [CRATES_TOKEN]
//!     artifacts: [out/app]
//!     network: false
//!     timeout: 1h
//!     mode: quorum
//!     replicas: 3
//!     threshold: 2
//!     release: true
//!
//!   scan:
//!     name: Malware scan
//!     needs: build
//!     uses: dvm
//!     kind: 5500
//!     inputs:
//!       - type: url
//!         value: ${{ jobs.build.artifacts['out/app'].url }}
//!         marker: binary
//!       - type: text
//!         value: "sha256=${{ jobs.build.artifacts['out/app'].sha256 }}"
//!     params:
//!       engine: clamav
//!       depth: 3
//!     provider: npub1sg6plzptd64u62a878hep2kev88swjh3tw00gjsfl8f237lmu63q0uf63m
//!     timeout: 15m
//!
//!   approve:
//!     needs: [build, scan]
//!     approval:
//!       required: 2
//!       from:
//!         - npub1sg6plzptd64u62a878hep2kev88swjh3tw00gjsfl8f237lmu63q0uf63m
//!         - a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1
//!         - 3bf0c63fcb93463407af97a5e5ee64fa883d107ef9e558472c4eb9aaaefa459d
//!       show: [build, scan]
//! ```
//!
//! # Schema and lints
//!
//! Every key, its type and default, an example, and the error a mistake gets are in the
//! pipeline reference, `docs/pipeline.md` (also `quorum lint --reference`), whose examples the
//! test suite runs through this linter, and which must name every key of [`KNOWN_KEYS`].
//! Every key is checked: an unknown key is an error with a "did you mean" hint. All errors
//! are reported at once, sorted by position ([`Diagnostics`]). [`Plan::triggered_by`] decides
//! whether a [`TriggerEvent`] starts the pipeline; expressions are parsed by [`expr`].
//! [`init`] writes a first pipeline for a project.
//!
//! # The plan and its hash
//!
//! A [`Plan`] is canonical: maps sorted, sets (`needs`, `secrets`, `artifacts`, approvers,
//! `show`, globs) sorted, keys as hex, expressions spelled canonically, jobs in topological
//! order with ties broken by id. So reordering jobs or map keys in the YAML, or spelling a
//! key as npub instead of hex, gives the same plan and the same [`Plan::plan_hash`]
//! (sha256 of [`Plan::canonical_json`]); anything that changes what runs changes the hash.
//! [`Plan::ready`] and [`Plan::dependants`] are what the router schedules with.

mod diag;
pub mod dispatch;
pub mod expr;
pub mod init;
mod lint;
mod plan;
pub mod select;
mod yaml;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use lint::{KNOWN_KEYS, MAX_FILE_BYTES, MAX_JOBS};
pub use plan::{
    DvmInput, InputType, JobSpec, ManualInput, ManualTrigger, Mode, Plan, PlannedJob,
    PullRequestTrigger, PushTrigger, TriggerEvent, Triggers, run_id,
};

/// Where a repository keeps its pipeline.
pub const PIPELINE_PATH: &str = ".quorum/pipeline.yml";

/// Parses and lints a selection policy file: the keys of a pipeline's `select:` at its root.
pub fn parse_policy(file_name: &str, text: &str) -> Result<select::SelectPolicy, Diagnostics> {
    lint::compile_select(file_name, text)
}

/// Parses, lints and compiles a pipeline file. `file_name` is only used in diagnostics.
///
/// On failure every problem found is returned, sorted by position.
pub fn parse(file_name: &str, text: &str) -> Result<Plan, Diagnostics> {
    lint::compile(file_name, text).map(|(plan, _)| plan)
}

/// [`parse`], also returning the warnings of a file that compiles (an unpinned build image
/// outside quorum mode); on failure the diagnostics hold warnings and errors.
pub fn parse_with_warnings(
    file_name: &str,
    text: &str,
) -> Result<(Plan, Diagnostics), Diagnostics> {
    lint::compile(file_name, text)
}
