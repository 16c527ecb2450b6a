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
//! # Schema
//!
//! Every key is checked: an unknown key is an error (with a "did you mean" hint), never
//! silently ignored.
//!
//! ## Top level
//!
//! | key | type | |
//! |---|---|---|
//! | `name` | string | optional display name |
//! | `on` | triggers | required: a pipeline without a trigger never runs |
//! | `jobs` | map of job id → job | required, not empty; ids are `[A-Za-z_][A-Za-z0-9_-]*` |
//!
//! ## `on`
//!
//! `on: push`, `on: [push, manual]`, or a mapping:
//!
//! - `push:` (may be empty) with optional `branches:` and `tags:`, each a glob or a list of
//!   globs matched against the branch or tag name (`main`, `release/**`, `v*`). `*` does not
//!   cross `/`, `**` does. As in GitHub Actions: with neither list every push runs the
//!   pipeline; with only `branches`, tag pushes do not (and the other way round). Negated
//!   (`!x`) patterns and empty lists are errors. Glob order is irrelevant (sorted in the plan).
//! - `manual:` (may be empty) with optional `inputs:`, a map of input name → `{ description,
//!   required (bool), default }`. Inputs are read with `${{ inputs.<name> }}`.
//!
//! [`Plan::triggered_by`] decides whether a [`TriggerEvent`] starts the pipeline.
//!
//! ## A job
//!
//! Each job is exactly one of: a script (`run` or `steps`), a DVM call (`uses: dvm`), or an
//! approval gate (`approval`).
//!
//! | key | applies to | |
//! |---|---|---|
//! | `name` | all | display name (default: the id) |
//! | `needs` | all | a job id or a list of them; order and repeats do not matter |
//! | `mode` | all | `naive`, `router` (default) or `quorum` (see design §4) |
//! | `replicas`, `threshold` | `mode: quorum` only, both required | n ≥ 2 builders, t of them must agree, 1 ≤ t ≤ n |
//! | `run` | script | a shell script (multi-line with `\|`) |
//! | `steps` | script | a list of `{ run, name? }`, joined in order into one script; step names are documentation and not part of the plan |
//! | `env` | script | map of environment variables; values may hold expressions |
//! | `secrets` | script | names of secrets the job receives as environment variables; values never appear in the file |
//! | `artifacts` | script | relative paths (no `..`, not absolute) uploaded after the job |
//! | `network` | script | bool, default `false` |
//! | `release` | script | bool: the job's artifacts are released once every job of the run succeeded (so after any approval gate); needs `artifacts` |
//! | `timeout` | script, DVM | seconds (`600`) or `90s`, `10m`, `1h`, `1h30m`; at most a week |
//! | `uses` | DVM | `dvm` |
//! | `kind` | DVM | the NIP-90 request kind, 5000–5999, outside Quorum CI's own block 5700–5719 |
//! | `inputs` | DVM | a list of `{ type: text\|url\|event\|job, value, marker? }` (NIP-90 `i` tags); `event`/`job` values are 64-hex ids or expressions |
//! | `params` | DVM | map of NIP-90 `param`s; values may hold expressions |
//! | `provider` | DVM | npub or hex key of the DVM to ask; default: any DVM serving `kind`. Not in `mode: quorum`: there each wrapper member forwards to the inner DVM the mandate names for it |
//! | `approval` | approval | `{ required: t, from: [npub/hex…], show: [job ids] }`: t ≥ 1 approvals from `from` (default: the repository's maintainers); `show` lists jobs (which it must need) whose artifacts and results approvers see, default its direct `needs` |
//!
//! ## Expressions
//!
//! `${{ jobs.<id>.result }}`, `${{ jobs.<id>.artifacts['<path>'].url }}`,
//! `${{ jobs.<id>.artifacts['<path>'].sha256 }}` and `${{ inputs.<name> }}`, in `env`, DVM
//! `inputs[].value` and `params` values; see [`expr`]. A referenced job must be needed
//! (directly or not), a referenced artifact declared, an input declared. Expressions are not
//! expanded in `run` scripts (script injection); pass values through `env`.
//!
//! # Lints
//!
//! All errors are reported at once, sorted by position, each with file, line, column,
//! message and, where we can tell, a hint ([`Diagnostics`]):
//!
//! ```text
//! .quorum/pipeline.yml:6:12: error: job "test" needs unknown job "biuld"
//!   hint: did you mean "build"?
//! ```
//!
//! YAML syntax errors, anchors/aliases, tags, several documents, non-string keys, files over
//! [`MAX_FILE_BYTES`], nesting over 64 levels, more than [`MAX_JOBS`] jobs; unknown keys and duplicate keys (at every
//! level), duplicate jobs, invalid job ids; missing `on`/`jobs`, empty `jobs`, unknown
//! triggers, bad globs; a job with nothing to do, with both `run` and `steps`, with both a
//! script and `uses`, an approval that also runs something, keys that do not apply to the
//! job's sort; unknown, self and repeated `needs`; cycles, named (`build → test → build`);
//! DVM kinds outside 5000–5999 or in our own block, an unknown `uses`; bad timeouts;
//! `replicas`/`threshold` outside quorum mode, missing in quorum mode, n < 2, t < 1, t > n;
//! invalid public keys (not bech32/hex, or not on the curve), repeated approvers, `required`
//! over the number of approvers; secret names and env names that are not environment variable
//! names, a secret also set in `env`; absolute or `..` artifact paths, repeated artifacts,
//! `release` without artifacts; malformed or unknown expressions, references to unknown jobs,
//! artifacts or inputs, to jobs not (transitively) needed, to the job itself, expressions in
//! `run`; `show` of unknown or unneeded jobs; type errors (a list where a string belongs…).
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
mod lint;
mod plan;
mod yaml;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use lint::{MAX_FILE_BYTES, MAX_JOBS};
pub use plan::{
    DvmInput, InputType, JobSpec, ManualInput, ManualTrigger, Mode, Plan, PlannedJob, PushTrigger,
    TriggerEvent, Triggers, run_id,
};

/// Where a repository keeps its pipeline.
pub const PIPELINE_PATH: &str = ".quorum/pipeline.yml";

/// Parses, lints and compiles a pipeline file. `file_name` is only used in diagnostics.
///
/// On failure every problem found is returned, sorted by position.
pub fn parse(file_name: &str, text: &str) -> Result<Plan, Diagnostics> {
    lint::compile(file_name, text)
}
