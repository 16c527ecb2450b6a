//! The command-line grammar (clap derive). Every command and flag documents itself in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Quorum CI: CI/CD without a chokepoint, on Nostr DVMs, Blossom and FROST quorums.
#[derive(Debug, Parser)]
#[command(name = "quorum", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags that every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output on stderr: -v for debug, -vv for trace (RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only print errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// When to use colours; `auto` honours NO_COLOR and whether stderr is a terminal.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Nostr relay (NIP-01, 09, 11, 40, 42, 45) with LMDB storage.
    Relay(RelayArgs),
    /// Run a Blossom server (BUD-01/02/04/06/11/12) with a content-addressed store on disk.
    Blossom(BlossomArgs),
    /// Run the embedded default network on loopback: a relay, a Blossom server and runner DVMs,
    /// data in one directory; writes DIR/endpoints.json once everything is ready.
    Up(UpArgs),
    /// Write a first .quorum/pipeline.yml for the project in DIR (Cargo, Go, npm, Python,
    /// CMake, Make, or a generic one): a test job and a 2-of-3 quorum build that releases.
    Init(InitArgs),
    /// Check a pipeline file without running it: every problem with line:col and a hint, the
    /// same checks `quorum run` and every DVM make. Exit code 1 on errors.
    Lint(LintArgs),
    /// Run the pipeline of a repository (.quorum/pipeline.yml at HEAD) on DVMs: the embedded
    /// network by default, or the DVMs on --relay.
    Run(RunArgs),
    /// Follow a run from the relays alone, from any machine: its jobs, log lines, approvals
    /// and outcome. Exit code 0 if the run succeeded, 1 if it failed, 2 on --timeout.
    Follow(FollowArgs),
    /// A live web dashboard of the runs, logs, quorums, approvals, releases and DVMs on the
    /// given relays and Blossom servers (it keeps nothing of its own).
    Ui(UiArgs),
    /// A complete tour on this machine: a sample project in a temporary git repository, its
    /// maintainer's signed NIP-34 state, a pipeline (test, build on the runners, approval by
    /// the demo maintainer, release), and the verification of what was released.
    Demo(DemoArgs),
    /// Check a file: the release that lists its sha256, who signed it, and which builders'
    /// signed results name exactly these bytes. Exit code 0 only if every check holds.
    Verify(VerifyArgs),
    /// Approve what an approval gate shows (kind 8701), after seeing it: the commit, every
    /// artifact's sha256 and who built it.
    Approve(VerdictArgs),
    /// Reject what an approval gate shows; the run fails when approval can no longer be reached.
    Reject(VerdictArgs),
    /// Run a Data Vending Machine that sells compute on the open market.
    #[command(subcommand)]
    Dvm(DvmCommand),
    /// Submit a job to DVMs and follow it live.
    #[command(subcommand)]
    Job(JobCommand),
    /// Quorum mandates (kind 8704): make a FROST quorum key among member DVMs and authorise it
    /// for a pipeline.
    #[command(subcommand)]
    Mandate(MandateCommand),
    /// Check what runs need on this machine (bubblewrap and a trial sandbox, the build user,
    /// user namespaces, cgroups, pasta, git, free disk) and reach relays and Blossom servers;
    /// prints each check with the command that fixes it. Exit code 0 unless a check failed.
    Doctor(DoctorArgs),
    /// DVM operators: sign the list of the DVMs you run (NIP-51, kind 30000), and see which
    /// DVMs an operator confirms. A DVM is an operator's only when its announcement names the
    /// operator (`--operator`) and the operator's list names the DVM.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// A maintainer's NIP-34 events: announce a repository (30617), push and publish the
    /// state of its refs (30618), which is what watchers follow.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// The open market: the DVMs offering a kind, their operator, price, mints, observed
    /// success/uptime/agreement/median duration, trust, and whether --policy admits each.
    Market(MarketArgs),
    /// A Cashu wallet (cdk, SQLite in the data directory) to pay priced DVMs with.
    Wallet(WalletArgs),
    /// Build images: make one from a root filesystem or OCI layout and put it on Blossom.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Print a shell completion script: `quorum completions bash > /etc/bash_completion.d/quorum`
    /// (zsh: into a directory on $fpath as `_quorum`; fish: ~/.config/fish/completions/quorum.fish).
    Completions(CompletionsArgs),
}

/// Options of `quorum doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Relay to reach, and to compare this machine's clock with (repeat for several).
    #[arg(long = "relay", value_name = "URL")]
    pub relays: Vec<String>,

    /// Blossom server to reach (repeat for several).
    #[arg(long = "blossom", value_name = "URL")]
    pub blossoms: Vec<String>,

    /// The data directory whose file system's free space is checked.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub data: PathBuf,

    /// Print one JSON object on stdout instead of text: `{"ok": …, "checks": […]}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Sign and publish the list of the DVMs you run (replacing your previous one).
    Publish(OperatorPublishArgs),
    /// Show which DVMs an operator confirms, and which DVM announcements claim it.
    Show(OperatorShowArgs),
}

/// Options of `quorum operator publish`.
#[derive(Debug, Args)]
pub struct OperatorPublishArgs {
    /// Relay to publish on (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    #[command(flatten)]
    pub signer: MaintainerSigner,

    /// A DVM you run, npub or hex (repeat, once per DVM): the whole list, replacing the last.
    #[arg(long = "dvm", value_name = "NPUB_OR_HEX", required = true)]
    pub dvms: Vec<String>,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `quorum operator show`.
#[derive(Debug, Args)]
pub struct OperatorShowArgs {
    /// The operator, npub or hex.
    #[arg(value_name = "NPUB_OR_HEX")]
    pub operator: String,

    /// Relay to read from (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum MandateCommand {
    /// Make a quorum key among the member DVMs (a DKG by default: nobody ever holds the whole
    /// key) and publish the mandate that authorises it.
    Create(Box<MandateCreateArgs>),
    /// Ask a quorum's members to refresh their shares: same quorum key, new shares that do not
    /// combine with the old ones. Publishes the mandate again with `keygen refresh`.
    Refresh(MandateRefreshArgs),
}

/// Options of `quorum mandate refresh`.
#[derive(Debug, Args)]
pub struct MandateRefreshArgs {
    /// Relay the members listen on (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    #[command(flatten)]
    pub signer: MaintainerSigner,

    /// The current mandate (kind 8704 event id, hex or nevent) naming the quorum key: its
    /// members, threshold, pipeline, jobs, `allow` and expiration are kept.
    #[arg(long, value_name = "ID")]
    pub mandate: String,

    /// How long to wait for all members to announce the refreshed key, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub wait: u64,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `quorum mandate create`.
#[derive(Debug, Args)]
pub struct MandateCreateArgs {
    /// Relay the members listen on (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    /// Your maintainer key file (nsec or hex, mode 0600): it signs the mandate.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "bunker",
        conflicts_with = "bunker"
    )]
    pub key: Option<PathBuf>,

    /// Sign the mandate through a NIP-46 remote signer instead (`bunker://…`): no maintainer
    /// key on this machine. Not with --dealer, which encrypts shares with a local key.
    #[arg(long, value_name = "URI", conflicts_with = "dealer")]
    pub bunker: Option<String>,

    /// The repository: an naddr or `30617:<owner hex>:<id>`.
    #[arg(long, value_name = "NADDR_OR_COORD")]
    pub repo: String,

    /// The pipeline file the quorum runs.
    #[arg(long, value_name = "NAME", default_value = ".quorum/pipeline.yml")]
    pub pipeline: String,

    /// A job of the pipeline the quorum runs (repeat); none = every job.
    #[arg(long = "job", value_name = "JOB")]
    pub jobs: Vec<String>,

    /// How many members must agree and sign; more than half of the members.
    #[arg(long, value_name = "T")]
    pub threshold: u16,

    /// A member DVM, npub or hex (repeat, once per member).
    #[arg(long = "member", value_name = "NPUB_OR_HEX", required = true)]
    pub members: Vec<String>,

    /// Deal the key here instead of running a DKG: this machine holds the whole key once,
    /// then sends each member its share and forgets them.
    #[arg(long)]
    pub dealer: bool,

    /// How long the mandate is valid: a number with s, m, h, d or w (e.g. 90d).
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub expires_in: String,

    /// An event kind the quorum may sign (repeat). Default: what the quorum jobs it covers
    /// sign, read from the pipeline file in --dir (8708 attestations; 8700 when one releases;
    /// 5702 for a quorum chain); 8708 when there is no such file.
    #[arg(long = "allow", value_name = "KIND")]
    pub allow: Vec<u16>,

    /// The repository checkout whose pipeline file (--pipeline) sets the default --allow.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,

    /// How long to wait for all members to announce the key they derived, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub wait: u64,

    /// Make the quorum even if fewer than T operators could sign together (members run by
    /// one operator, or whose operator is not confirmed). Without it that is refused.
    #[arg(long)]
    pub allow_same_operator: bool,

    /// A key that may request the quorum's jobs (repeat): the router DVM, the watcher
    /// quorum's key, the machine that runs `quorum run --key`. Without any, members take
    /// requests from anyone, and still build only what the pipeline at a signed commit says.
    #[arg(long = "requester", value_name = "NPUB_OR_HEX")]
    pub requesters: Vec<String>,

    /// Which commits the quorum builds: `tip` (the commit a ref of the newest
    /// maintainer-signed state points at) or `ancestor` (also commits reachable from one).
    #[arg(long, value_name = "RULE", default_value = "tip", value_parser = ["tip", "ancestor"])]
    pub source: String,

    /// For a quorum of wrapper DVMs: MEMBER=INNER, the ordinary DVM a member forwards to
    /// (repeat, once per member; every member a different inner DVM).
    #[arg(long = "inner", value_name = "MEMBER=INNER")]
    pub inner: Vec<String>,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DvmCommand {
    /// Serve run-step jobs (kind 5702): fetch the commit, run the step in bubblewrap, upload
    /// log and artifacts to Blossom.
    Runner(RunnerArgs),
    /// Serve run-pipeline jobs (kind 5700): run the pipeline committed at the requested commit
    /// on runner DVMs, resuming from the relays after a restart.
    Router(RouterArgs),
    /// Watch a git repository and ask a router to run its pipeline for every new commit on a
    /// ref its pipeline triggers on (one run per commit and pipeline).
    Watcher(WatcherArgs),
    /// Hold a quorum share and take part in the agreement, but have an ordinary DVM of kind K
    /// on the open market do the work (a NIP-90 DVM that knows nothing of Quorum CI).
    Wrapper(WrapperArgs),
    /// Keep the public record: publish each DVM's observed success, uptime, agreement and
    /// median duration as NIP-85 assertions (kind 30382) under this key, every --interval.
    Recorder(RecorderArgs),
}

/// Options of `quorum wallet`.
#[derive(Debug, Args)]
pub struct WalletArgs {
    /// The mint (URL) this wallet holds ecash of.
    #[arg(long, value_name = "URL")]
    pub mint: String,

    /// Wallet directory (SQLite store and seed); default `$XDG_DATA_HOME/quorum/wallet`.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,

    #[command(subcommand)]
    pub command: WalletCommand,
}

/// What `quorum wallet` does.
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Spendable sats.
    Balance,
    /// Mint AMOUNT sats from a Lightning invoice the mint issues (logged at info level; a test
    /// mint pays it by itself), waiting up to --wait seconds for the payment.
    Mint {
        amount: u64,
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Receive a token (`cashuB…`) into the wallet.
    Receive { token: String },
    /// Print a bearer token of AMOUNT sats (whoever holds it can spend it).
    Send { amount: u64 },
}

/// Options of `quorum market`.
#[derive(Debug, Args)]
pub struct MarketArgs {
    /// Relay to read the market from (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    /// The request kind the DVMs serve.
    #[arg(long, default_value_t = 5702)]
    pub kind: u16,

    /// Selection policy (YAML: the keys of a pipeline's `select:`) to judge each DVM by.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Whose list, follows and rank providers `trusted` reads when the policy names no `by`.
    #[arg(long, value_name = "NPUB_OR_HEX")]
    pub maintainer: Option<String>,

    /// Seconds to wait for the relays' answers.
    #[arg(long, default_value_t = 5)]
    pub wait: u64,

    /// Print the judgement as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `quorum dvm recorder`.
#[derive(Debug, Args)]
pub struct RecorderArgs {
    /// Relay to read the record from and publish on (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    /// The recorder's secret key file (nsec or hex, mode 0600); created if missing.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// Request kind whose DVMs are recorded (repeat for several).
    #[arg(long = "kind", value_name = "K", default_value = "5702")]
    pub kinds: Vec<u16>,

    /// How many of each DVM's latest jobs count.
    #[arg(long, default_value_t = 20)]
    pub window: u32,

    /// Seconds between rounds.
    #[arg(long, default_value_t = 300)]
    pub interval: u64,

    /// One round, then exit.
    #[arg(long)]
    pub once: bool,
}

/// Options of `quorum dvm watcher`.
#[derive(Debug, Args)]
pub struct WatcherArgs {
    /// Relay to publish run requests on (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    /// The repository to watch (the URL runners fetch from).
    #[arg(long, value_name = "GIT_URL")]
    pub repo: String,

    /// The router DVM that runs the pipelines (npub or hex).
    #[arg(long, value_name = "PUBKEY")]
    pub router: String,

    /// Follow the signed NIP-34 state of the repository announced (kind 30617) by this key,
    /// instead of polling the git server (needs --identifier).
    #[arg(long, value_name = "PUBKEY", requires = "identifier")]
    pub owner: Option<String>,

    /// The repository's NIP-34 identifier (the `d` tag of its announcement).
    #[arg(long, value_name = "D", requires = "owner")]
    pub identifier: Option<String>,

    /// The watcher's secret key file (nsec or hex, mode 0600); created if missing.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// Data directory: what the watcher has seen and started.
    #[arg(long)]
    pub data: PathBuf,

    /// Seconds between two looks at the repository.
    #[arg(long, default_value_t = 30)]
    pub interval: u64,

    /// Allow file:// and local-path repositories (the embedded network and tests only).
    #[arg(long)]
    pub allow_local_repos: bool,

    /// Allow repositories on loopback, private and link-local addresses (a git server on
    /// your own network; by default only public addresses are fetched from).
    #[arg(long)]
    pub allow_private_git: bool,

    /// Watch as a member of a watcher quorum under this mandate (kind 8704 event id, which
    /// must allow kinds 8708 and 5700): the quorum key, not this watcher, signs each run
    /// request once enough watchers agreed on the commit. Shares are kept in DATA/shares.
    /// Not needed with --owner: the watcher then acts under the repository's watcher mandate
    /// in force that lists it, and signs its requests itself while there is none.
    #[arg(long, value_name = "EVENT_ID")]
    pub mandate: Option<String>,

    /// Who runs this DVM (npub or hex), named in its NIP-89 announcement. The operator
    /// confirms it with `quorum operator publish --dvm THIS_DVM`.
    #[arg(long, value_name = "NPUB_OR_HEX")]
    pub operator: Option<String>,
}

/// Options of `quorum dvm router`.
#[derive(Debug, Args)]
pub struct RouterArgs {
    /// Relay to serve on (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    /// The DVM's secret key file (nsec or hex, mode 0600); created if missing.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// Data directory: job journal and checkouts.
    #[arg(long)]
    pub data: PathBuf,

    /// Runner to use when a request names none (repeat); default: runners that announce
    /// themselves (NIP-89).
    #[arg(long = "runner", value_name = "PUBKEY")]
    pub runners: Vec<String>,

    /// Longest a whole run may take, in seconds.
    #[arg(long, default_value_t = 6 * 3600)]
    pub max_run: u64,

    /// Allow file:// and local-path repositories (the embedded network and tests only).
    #[arg(long)]
    pub allow_local_repos: bool,

    /// Who runs this DVM (npub or hex), named in its NIP-89 announcement. The operator
    /// confirms it with `quorum operator publish --dvm THIS_DVM`.
    #[arg(long, value_name = "NPUB_OR_HEX")]
    pub operator: Option<String>,

    /// Allow repositories on loopback, private and link-local addresses (a git server on
    /// your own network; by default only public addresses are fetched from).
    #[arg(long)]
    pub allow_private_git: bool,

    /// Selection policy (YAML: the keys of a pipeline's `select:`) for runs whose request
    /// names no runners, applied to jobs whose pipeline gives no `select:`.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// The Cashu mint whose tokens pay for runs (announced with the fee). A requester pays
    /// the fee plus a budget for the runners a run hires, in a token locked to this router's
    /// key; the run pays priced runners from it (wallet in DATA/wallet) and what it did not
    /// spend goes back as change. Without it, runs hire free runners only.
    #[arg(long, value_name = "URL")]
    pub mint: Option<String>,

    /// The router's fee per run in millisats (whole sats are charged), announced via NIP-89;
    /// a request without a token gets `payment-required`.
    #[arg(long, default_value_t = 0, value_name = "MSATS", requires = "mint")]
    pub fee_msats: u64,
}

/// Options of `quorum dvm runner`.
#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// Relay to serve on (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    /// Blossom server for logs and artifacts (repeat for several).
    #[arg(long = "blossom", value_name = "URL", required = true)]
    pub blossom: Vec<url::Url>,

    /// The DVM's secret key: a file holding an nsec or 64 hex characters, mode 0600.
    /// Created with a fresh key if it does not exist.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// Data directory: job journal and per-job work dirs.
    #[arg(long)]
    pub data: PathBuf,

    /// Jobs run at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,

    /// Longest step timeout accepted, in seconds (also the default).
    #[arg(long, default_value_t = 3600)]
    pub max_timeout: u64,

    /// Give steps that ask for it a network of their own (outbound only: the host's loopback,
    /// private, link-local and own networks stay unreachable). Off by default.
    #[arg(long)]
    pub allow_network: bool,

    /// Also let steps with network reach this IPv4 network (CIDR, e.g. 10.8.0.0/16; repeat).
    #[arg(
        long = "allow-network-to",
        value_name = "CIDR",
        requires = "allow_network"
    )]
    pub allow_network_to: Vec<quorum_sandbox::Ipv4Cidr>,

    /// Size cap of the work dir in MiB (a loop-mounted file system under DATA/work, as root);
    /// a step that writes past it fails. 0 leaves the work dir on the data dir's file system.
    #[arg(long, default_value_t = 20480)]
    pub work_disk_mib: u64,

    /// Allow file:// and local-path repositories (the embedded network and tests only).
    #[arg(long)]
    pub allow_local_repos: bool,

    /// Allow repositories on loopback, private and link-local addresses (a git server on
    /// your own network; by default only public addresses are fetched from).
    #[arg(long)]
    pub allow_private_git: bool,

    /// DEVELOPMENT ONLY: run steps as plain processes that can read this machine's keys.
    #[arg(long)]
    pub unsandboxed: bool,

    /// Price per job in millisats, announced via NIP-89.
    #[arg(long, default_value_t = 0)]
    pub price_msats: u64,

    /// Price per second a job runs, in millisats, on top of --price-msats: prepaid for
    /// --max-timeout, and what a job did not use goes back with its result as change.
    #[arg(long, default_value_t = 0, value_name = "MSATS")]
    pub price_msats_per_second: u64,

    /// The Cashu mint whose tokens pay for jobs (announced with the price). With a price, a
    /// request without a token locked to this runner's key gets `payment-required` and no
    /// work; payments go to the wallet in DATA/wallet.
    #[arg(long, value_name = "URL")]
    pub mint: Option<String>,

    /// Who runs this DVM (npub or hex), named in its NIP-89 announcement. The operator
    /// confirms it with `quorum operator publish --dvm THIS_DVM`.
    #[arg(long, value_name = "NPUB_OR_HEX")]
    pub operator: Option<String>,

    #[command(flatten)]
    pub images: ImageCacheArgs,
}

/// How a runner keeps build images (`image:` in pipelines).
#[derive(Debug, Args, Clone)]
pub struct ImageCacheArgs {
    /// Where unpacked build images are kept, shared by jobs (default: DATA/images).
    #[arg(long, value_name = "DIR")]
    pub image_cache: Option<PathBuf>,

    /// Size cap of the image cache in MiB; least recently used images not in use are evicted.
    #[arg(long, default_value_t = 20480, value_name = "MIB")]
    pub image_cache_mib: u64,

    /// Refuse steps that name no build image (they would run on this host's own toolchain);
    /// announced in the NIP-89 handler event as a `["t", "require-image"]` tag.
    #[arg(long)]
    pub require_image: bool,

    /// A registry (HOST[:PORT]) that images may be pulled from over plain HTTP although it is
    /// not on loopback (repeat). Every blob is re-hashed either way.
    #[arg(long = "image-insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

/// `quorum image`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Turn a root filesystem (directory or tarball, e.g. from mmdebstrap) or an OCI image
    /// layout into an image on Blossom servers, and print `NAME@sha256:…` for `image:`.
    Push(ImagePushArgs),
}

/// Options of `quorum image push`.
#[derive(Debug, Args)]
pub struct ImagePushArgs {
    /// A root filesystem directory, a root filesystem tarball (.tar, .tar.gz, .tar.zst), or an
    /// OCI image layout directory.
    pub input: PathBuf,

    /// The image's name, [HOST[:PORT]/]path[:tag]; usually the Blossom server's host, so that
    /// `skopeo copy docker://NAME@sha256:…` finds it there too.
    pub name: String,

    /// Blossom server to upload to (repeat for several).
    #[arg(long = "blossom", value_name = "URL", required = true)]
    pub blossom: Vec<url::Url>,

    /// Key to sign the uploads with (a file with an nsec or 64 hex, mode 0600); a fresh key
    /// if not given.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// How a directory's layer is compressed (a tarball or layout keeps its own): zstd costs
    /// runners the least to unpack; gzip for clients older than OCI image-spec 1.1.
    #[arg(long, value_enum, default_value_t = LayerCompression::Zstd)]
    pub compression: LayerCompression,
}

/// Layer compression of `quorum image push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayerCompression {
    Zstd,
    Gzip,
    /// An uncompressed tar.
    None,
}

/// Options of `quorum dvm wrapper`.
#[derive(Debug, Args)]
pub struct WrapperArgs {
    /// Relay to serve on (repeat for several); inner DVMs are asked there too.
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    /// The DVM's secret key: a file holding an nsec or 64 hex characters, mode 0600.
    /// Created with a fresh key if it does not exist.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// Data directory: job journal, and quorum key shares in DATA/shares.
    #[arg(long)]
    pub data: PathBuf,

    /// The job kind of the ordinary DVMs that do the work (5000-5999).
    #[arg(long, value_name = "K")]
    pub inner_kind: u16,

    /// The job kind this wrapper serves; default: the inner kind.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<u16>,

    /// An inner DVM to delegate to, npub or hex (repeat, in order of preference: the next is
    /// asked on error or timeout). None = the open market, which needs --kind other than
    /// --inner-kind.
    #[arg(long = "inner-provider", value_name = "PUBKEY")]
    pub inner_providers: Vec<String>,

    /// Longest wait for one inner DVM's answer, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,

    /// Jobs run at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// Price per job in millisats, announced via NIP-89.
    #[arg(long, default_value_t = 0)]
    pub price_msats: u64,

    /// Let quorum jobs name file:// repositories (read for their pipeline); for a local
    /// network only.
    #[arg(long)]
    pub allow_local_repos: bool,

    /// Let quorum jobs name repositories on loopback, private and link-local addresses (read
    /// for their pipeline; by default only public addresses are fetched from).
    #[arg(long)]
    pub allow_private_git: bool,

    /// Fetch the files an inner DVM's result claims from loopback, private and link-local
    /// addresses too (by default only public addresses; the wrapper hashes every claimed file
    /// before it commits to it).
    #[arg(long)]
    pub allow_private_downloads: bool,

    /// Who runs this DVM (npub or hex), named in its NIP-89 announcement. The operator
    /// confirms it with `quorum operator publish --dvm THIS_DVM`.
    #[arg(long, value_name = "NPUB_OR_HEX")]
    pub operator: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Build or test a commit on a runner DVM (kind 5702).
    Build(BuildArgs),
    /// Submit a request of any NIP-90 kind.
    Submit(SubmitArgs),
}

/// Where and how a job is sent.
#[derive(Debug, Args)]
pub struct JobTarget {
    /// Relay to publish on (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    /// The DVM to ask (npub or hex); without it, any DVM may answer.
    #[arg(long, value_name = "PUBKEY")]
    pub provider: Option<String>,

    /// Your key file (nsec or hex, mode 0600); default: a fresh key for this job.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// How long to wait for the outcome, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub wait: u64,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,

    /// Pay a DVM that answers `payment-required`, at most SATS for the job, from the wallet
    /// of --mint (Cashu, a token locked to --provider; change comes back into the wallet).
    #[arg(long, value_name = "SATS", requires_all = ["mint", "provider"])]
    pub budget: Option<u64>,

    /// The mint of the wallet --budget pays from (`quorum wallet --mint URL mint N` fills it).
    #[arg(long, value_name = "URL", requires = "budget")]
    pub mint: Option<String>,

    /// The wallet directory; default `$XDG_DATA_HOME/quorum/wallet` (as `quorum wallet`).
    #[arg(long, value_name = "DIR", requires = "budget")]
    pub wallet: Option<PathBuf>,
}

/// Options of `quorum job build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub target: JobTarget,

    /// Git URL of the repository.
    #[arg(long, value_name = "GIT_URL")]
    pub repo: String,

    /// The exact commit id to build.
    #[arg(long, value_name = "SHA")]
    pub commit: String,

    /// Shell command to run (repeat to run several in order).
    #[arg(long = "run", value_name = "CMD", required = true)]
    pub run: Vec<String>,

    /// Path to upload after the step (repeat; directories are packed as PATH.tar).
    #[arg(long = "artifact", value_name = "PATH")]
    pub artifacts: Vec<String>,

    /// Environment variable for the step (repeat).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Secret environment variable (repeat): NAME takes the value of the environment variable
    /// NAME (NAME=VALUE also works, but shows the value to other users of this machine). Sent
    /// NIP-44 encrypted; needs --provider.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,

    /// Let the step use the network.
    #[arg(long)]
    pub network: bool,

    /// Step timeout in seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

/// Options of `quorum job submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub target: JobTarget,

    /// Job request kind (5000-5999).
    #[arg(long)]
    pub kind: u16,

    /// Input as TYPE[#MARKER]:VALUE, TYPE one of text, url, event, job (repeat); e.g.
    /// `url#repo:https://git.example/app.git`.
    #[arg(long = "input", value_name = "TYPE[#MARKER]:VALUE")]
    pub inputs: Vec<String>,

    /// Parameter as KEY=VALUE (repeat).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,

    /// Encrypt inputs and params with NIP-44 (needs --provider).
    #[arg(long)]
    pub encrypt: bool,
}

/// Options of `quorum relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7777")]
    pub listen: SocketAddr,

    /// Data directory (the LMDB store lives in DATA/lmdb).
    #[arg(long)]
    pub data: PathBuf,

    #[command(flatten)]
    pub options: RelayOptions,
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Sign and publish the repository's announcement (kind 30617): clone URLs (default: the
    /// remotes' URLs), the relays it is followed on, its maintainers, its earliest commit.
    Announce(RepoAnnounceArgs),
    /// `git push`, then sign and publish the state (kind 30618) of every branch and tag the
    /// remote now holds: what watchers build from.
    Push(RepoPushArgs),
}

/// Who signs a maintainer's event: `--key FILE` or `--bunker URI`.
#[derive(Debug, Args)]
pub struct MaintainerSigner {
    /// Your maintainer key file (nsec or hex, mode 0600).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "bunker",
        conflicts_with = "bunker"
    )]
    pub key: Option<PathBuf>,

    /// Sign through a NIP-46 remote signer instead (`bunker://…`): no key on this machine.
    #[arg(long, value_name = "URI")]
    pub bunker: Option<String>,
}

/// Options of `quorum repo announce`.
#[derive(Debug, Args)]
pub struct RepoAnnounceArgs {
    /// The repository (a git work tree).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// Relay to publish on (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    #[command(flatten)]
    pub signer: MaintainerSigner,

    /// The repository's id (`d` tag; default: the directory's name).
    #[arg(long, value_name = "D")]
    pub identifier: Option<String>,

    /// A display name.
    #[arg(long)]
    pub name: Option<String>,

    /// A one-line description.
    #[arg(long)]
    pub description: Option<String>,

    /// A clone URL (repeat; default: the fetch URLs of the repository's remotes). Runners
    /// build only from these.
    #[arg(long = "clone", value_name = "GIT_URL")]
    pub clone: Vec<String>,

    /// A web page of the repository (repeat).
    #[arg(long = "web", value_name = "URL")]
    pub web: Vec<String>,

    /// A relay the repository is followed on, named in the announcement (repeat; default: the
    /// --relay URLs).
    #[arg(long = "repo-relay", value_name = "URL")]
    pub repo_relays: Vec<String>,

    /// Another maintainer, npub or hex (repeat): their signed states count too.
    #[arg(long = "maintainer", value_name = "NPUB")]
    pub maintainers: Vec<String>,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `quorum repo push`.
#[derive(Debug, Args)]
pub struct RepoPushArgs {
    /// The repository (a git work tree).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,

    /// The remote to push to.
    #[arg(long, default_value = "origin")]
    pub remote: String,

    /// What to push (git refspecs; default: the current branch).
    pub refspecs: Vec<String>,

    /// Relay to publish the state on (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    #[command(flatten)]
    pub signer: MaintainerSigner,

    /// The repository's id (`d` tag; default: the directory's name), as announced.
    #[arg(long, value_name = "D")]
    pub identifier: Option<String>,

    /// Publish the remote's state without pushing first.
    #[arg(long)]
    pub no_push: bool,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `quorum init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The project's root directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// Replace an existing .quorum/pipeline.yml.
    #[arg(long)]
    pub force: bool,

    /// The branch whose pushes run the pipeline (default: the checkout's branch, or main).
    #[arg(long)]
    pub branch: Option<String>,

    /// Print what was written as JSON (`path`, `kind`, `name`, `artifact`).
    #[arg(long)]
    pub json: bool,
}

/// Options of `quorum lint`.
#[derive(Debug, Args)]
pub struct LintArgs {
    /// The pipeline file, or a repository directory (its .quorum/pipeline.yml).
    #[arg(default_value = ".")]
    pub file: PathBuf,

    /// Print the result as JSON: `ok`, `errors` (file, line, column, message, hint), and for a
    /// clean file its `plan_hash` and `jobs`.
    #[arg(long)]
    pub json: bool,

    /// Print the pipeline reference (docs/pipeline.md) instead.
    #[arg(long, conflicts_with = "json")]
    pub reference: bool,
}

/// Options of `quorum completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options of `quorum demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run on this relay's network (repeat) and the runners it announces, instead of starting
    /// the embedded one. The demo repository is local (file://): its runners must be allowed
    /// to read local repositories, as `quorum up`'s are.
    #[arg(long = "relay", value_name = "URL")]
    pub relays: Vec<String>,

    /// Where the demo keeps its network data, repository and released file (default: a new
    /// directory under the system's temporary directory, kept afterwards).
    #[arg(long)]
    pub data: Option<PathBuf>,

    /// Have this Blossom server copy the released file (BUD-04 mirror, repeat for several)
    /// before the release is published; its copies are listed in the release's 1063 and 3063
    /// events. A refusal is reported and fails nothing.
    #[arg(long = "blossom", value_name = "URL")]
    pub blossoms: Vec<String>,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `quorum verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The file to check, or an OCI image layout directory (as `quorum run --out` saves an
    /// `oci:` artifact, or `skopeo copy … oci:DIR` writes): every blob re-hashed, its one image
    /// manifest's digest checked as a file's sha256 is.
    #[arg(required_unless_present = "image", conflicts_with = "image")]
    pub file: Option<PathBuf>,

    /// Check an OCI image a release lists instead of a file: `HOST[:PORT]/NAME@sha256:<manifest
    /// digest>`. Its manifest is fetched from that registry (e.g. `quorum blossom`'s `/v2/`),
    /// re-hashed, and its digest checked as a file's sha256 is.
    #[arg(long, value_name = "NAME@sha256:DIGEST")]
    pub image: Option<String>,

    /// A registry (`host[:port]`) --image may reach over plain HTTP although it is not on
    /// loopback (repeat for several).
    #[arg(long = "insecure-registry", value_name = "HOST", requires = "image")]
    pub insecure_registries: Vec<String>,

    /// The repository the file must be a release of: `30617:<owner hex>:<d>` or its
    /// `naddr1…`. Without it nothing verifies: verify reports what it found and fails.
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,

    /// Relay to read release events from (repeat for several).
    #[arg(long = "relay", value_name = "URL", required_unless_present = "bundle")]
    pub relays: Vec<String>,

    /// A verification bundle (the JSON file a release stores next to its artifacts): verify
    /// from its signed events, with no relay at all when no --relay is given.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,

    /// Fail unless the quorum's threshold t is at least T.
    #[arg(long, value_name = "T")]
    pub min_threshold: Option<u16>,

    /// Fail unless the members that agreed are run by at least K distinct operators (each
    /// confirmed by both its DVM's announcement and the operator's signed list).
    #[arg(long, value_name = "K")]
    pub min_operators: Option<usize>,

    /// Fail unless the quorum key was made by DKG (not by a dealer, who held the whole key).
    #[arg(long)]
    pub require_dkg: bool,

    /// Accept a release signed by a single builder's key rather than a quorum.
    #[arg(long)]
    pub allow_single_builder: bool,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `quorum follow`.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// The run: its run-pipeline request's event id (64 hex, note1… or nevent1…, as the
    /// watcher logs it); or a repository (30617:<owner hex>:<d> or naddr1…) to follow its run
    /// in progress, else its next one.
    #[arg(value_name = "RUN|REPO")]
    pub target: String,

    /// Relay to read the run from (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    /// Print one JSON object per line on stdout (each thing that happened, the outcome
    /// last) instead of progress lines.
    #[arg(long)]
    pub json: bool,

    /// Give up after this long (e.g. 90s, 10m, 2h; bare numbers are seconds), waiting for
    /// the run included, with exit code 2.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

/// A duration as people write it: `90`, `90s`, `10m`, `2h`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "{text:?}: use a number with s, m or h (e.g. 90s, 10m)"
            ));
        }
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: use a number with s, m or h (e.g. 90s, 10m)"))?;
    Ok(std::time::Duration::from_secs(value.saturating_mul(scale)))
}

/// Options of `quorum approve` and `quorum reject`.
#[derive(Debug, Args)]
pub struct VerdictArgs {
    /// The approval request's event id (printed by the waiting run).
    #[arg(value_name = "REQUEST")]
    pub request: String,

    /// Relay to read the request from and publish the verdict to (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    #[command(flatten)]
    pub signer: MaintainerSigner,

    /// Sign without asking for confirmation (for scripts).
    #[arg(long)]
    pub yes: bool,

    /// A comment (for a rejection: why).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub comment: String,

    /// Print the signed verdict as JSON (`decision`, `verdict`, `request`, `repository`,
    /// `commit`, `artifacts`) on stdout; what is approved is still shown on stderr.
    #[arg(long)]
    pub json: bool,
}

/// Options of `quorum run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The repository whose HEAD commit and pipeline to run.
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// Pay priced DVMs from the wallet of --mint, at most SATS for the whole run (Cashu
    /// tokens P2PK-locked to each DVM, NIP-44 encrypted in its request, refundable to the
    /// run's key after the job's timeout and an hour). Without it, priced DVMs are passed over.
    #[arg(long, value_name = "SATS", requires = "mint")]
    pub budget: Option<u64>,

    /// The mint of the wallet --budget pays from (`quorum wallet --mint URL mint N` fills it).
    #[arg(long, value_name = "URL")]
    pub mint: Option<String>,

    /// The wallet directory; default `$XDG_DATA_HOME/quorum/wallet` (as `quorum wallet`).
    #[arg(long, value_name = "DIR")]
    pub wallet: Option<PathBuf>,

    /// Use the DVMs on this relay (repeat) instead of starting the embedded network.
    #[arg(long = "relay", value_name = "URL")]
    pub relays: Vec<String>,

    /// Git URL the DVMs fetch from (default: file://DIR, readable only by DVMs on this machine).
    #[arg(long, value_name = "GIT_URL")]
    pub repo: Option<String>,

    /// Data directory of the embedded network (default: a new directory under
    /// $XDG_DATA_HOME/quorum/runs, printed at the start; `quorum up --data` serves it again).
    #[arg(long)]
    pub data: Option<PathBuf>,

    /// Download every artifact of the run into DIR (each checked against its sha256), with the
    /// release's verification bundle, before the embedded network stops.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// A secret the pipeline uses: NAME takes the value of the environment variable NAME
    /// (NAME=VALUE also works, but shows the value to other users of this machine). Repeat.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,

    /// A manual input of the pipeline, NAME=VALUE (repeat).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,

    /// The repository's NIP-34 owner (npub or hex), which approval requests name.
    #[arg(long, value_name = "PUBKEY", requires = "identifier")]
    pub owner: Option<String>,

    /// The repository's NIP-34 identifier (`d`).
    #[arg(long, value_name = "D", requires = "owner")]
    pub identifier: Option<String>,

    /// A maintainer approval gates ask when their `from` is empty (repeat).
    #[arg(long = "maintainer", value_name = "PUBKEY")]
    pub maintainers: Vec<String>,

    /// The mandate (8704 event id) that quorum jobs (`mode: quorum`) run under, looked up on
    /// the relays. Without it, on the embedded network, the embedded runners form a quorum by
    /// DKG and a local key in the data directory mandates it.
    #[arg(long, value_name = "EVENT_ID")]
    pub mandate: Option<String>,

    /// The key this run signs its requests with: a file holding an nsec or 64 hex characters,
    /// mode 0600 (created if missing). A mandate that names who may request its quorum's jobs
    /// (`quorum mandate create --requester`) must name this key. Default: your run identity,
    /// $XDG_CONFIG_HOME/quorum/run.nsec (~/.config/quorum/run.nsec), created on first use, so
    /// that your runs, releases and CI statuses are signed by one key others can recognise.
    #[arg(long, value_name = "FILE", conflicts_with = "bunker")]
    pub key: Option<PathBuf>,

    /// Sign (and NIP-44 encrypt and decrypt) through a NIP-46 remote signer instead
    /// (`bunker://…`): the run's key never touches this machine. Every request, secret and
    /// answer then goes through the bunker, one round trip each.
    #[arg(long, value_name = "URI")]
    pub bunker: Option<String>,

    /// Runner DVMs of the embedded network (at least as many as a quorum job's replicas).
    #[arg(long, default_value_t = 2)]
    pub runners: usize,

    /// DEVELOPMENT ONLY: start the embedded runners without a sandbox if bubblewrap is missing.
    #[arg(long)]
    pub unsandboxed_runners: bool,

    /// After a successful run, have this Blossom server copy every released artifact (BUD-04
    /// mirror, repeat for several) before the release is published; its copies are listed
    /// in the release's 1063 and 3063 events. A refusal is reported and fails nothing.
    #[arg(long = "blossom", value_name = "URL")]
    pub blossoms: Vec<String>,

    /// Sign the release's NIP-82 events (app 32267, release 30063, assets 3063) with this
    /// maintainer key file (an nsec or 64 hex characters) instead of this run's key: zapstore
    /// admits publishers by key, so the key it knows must sign them. The release binding and
    /// the 1063s are signed as before.
    #[arg(long, value_name = "FILE", conflicts_with = "nip82_bunker")]
    pub nip82_key: Option<PathBuf>,

    /// Sign the NIP-82 events through a NIP-46 remote signer (`bunker://…`), as zapstore's own
    /// publisher does in CI.
    #[arg(long, value_name = "URI")]
    pub nip82_bunker: Option<String>,

    /// The NIP-82 release channel (`c`): `main`, `beta`, `nightly` or `dev`. Default: `main`,
    /// or `beta` for a pre-release version (`1.0.0-rc1`, an untagged commit's `0.0.0-g…`).
    #[arg(long, value_name = "CHANNEL")]
    pub nip82_channel: Option<String>,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Relay settings shared by `quorum relay` and `quorum up`.
#[derive(Debug, Args, Default)]
pub struct RelayOptions {
    /// Largest accepted event (serialised JSON).
    #[arg(long, value_name = "SIZE")]
    pub max_event_size: Option<ByteSize>,

    /// Largest accepted client message (a REQ with many filters, an EVENT).
    #[arg(long, value_name = "SIZE")]
    pub max_message_size: Option<ByteSize>,

    /// Most events a single REQ filter may return.
    #[arg(long, value_name = "N")]
    pub max_filter_limit: Option<usize>,

    /// Most events one connection may publish per minute (0 = unlimited).
    #[arg(long, value_name = "N")]
    pub events_per_minute: Option<u32>,

    /// Most open subscriptions per connection.
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,

    /// Most simultaneous connections.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most simultaneous connections from one address (IPv6: one /64); 0 = unlimited. Behind
    /// a reverse proxy every client has the proxy's address. [default: 256]
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// Seconds a new connection has to send its HTTP request (the WebSocket upgrade).
    /// [default: 10]
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout: Option<u64>,

    /// Seconds without any frame from a client (it is pinged halfway) before it is closed;
    /// 0 = never. [default: 120]
    #[arg(long, value_name = "SECS")]
    pub read_timeout: Option<u64>,

    /// Seconds a connection without subscriptions may stay silent before it is closed;
    /// 0 = never. [default: 300]
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,

    /// Most stored events one REQ returns, in bytes; past it the REQ gets CLOSED naming the
    /// `until` to continue from; 0 = unlimited. [default: 32MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_req_size: Option<ByteSize>,

    /// NIP-42 authentication.
    #[arg(long, value_enum, default_value_t = AuthArg::Off)]
    pub auth: AuthArg,

    /// The URL clients use to reach this relay (wss://relay.example.org), checked against the
    /// `relay` tag of NIP-42 AUTH events. Without it the client's Host header is trusted.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<url::Url>,

    /// With --auth write or read: only connections authenticated as one of these keys (npub or
    /// hex; repeat) may publish. Default: any authenticated key.
    #[arg(long = "allow-writer", value_name = "PUBKEY")]
    pub allowed_writers: Vec<String>,

    /// Relay name in the NIP-11 document.
    #[arg(long)]
    pub name: Option<String>,

    /// Relay description in the NIP-11 document.
    #[arg(long)]
    pub description: Option<String>,

    /// Operator contact (NIP-11).
    #[arg(long)]
    pub contact: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AuthArg {
    /// No AUTH challenge.
    #[default]
    Off,
    /// Send an AUTH challenge; require nothing.
    Available,
    /// Require NIP-42 authentication to publish.
    Write,
    /// Require NIP-42 authentication to read.
    Read,
}

/// Options of `quorum blossom`.
#[derive(Debug, Args)]
pub struct BlossomArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Data directory (blobs and their metadata).
    #[arg(long)]
    pub data: PathBuf,

    /// Public base URL used in blob descriptors (default: http://LISTEN).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<url::Url>,

    #[command(flatten)]
    pub options: BlossomOptions,
}

/// Blossom settings shared by `quorum blossom` and `quorum up`.
#[derive(Debug, Args)]
pub struct BlossomOptions {
    /// Largest accepted blob.
    #[arg(long, value_name = "SIZE", default_value = "2GiB")]
    pub max_blob_size: ByteSize,

    /// Only these keys may upload (npub or hex; repeat). Default: anyone with a valid BUD-11 token.
    #[arg(long = "allow-uploader", value_name = "PUBKEY")]
    pub allowed_uploaders: Vec<String>,

    /// Accept uploads without a BUD-11 authorization event.
    #[arg(long)]
    pub anonymous_uploads: bool,

    /// Let BUD-04 mirror requests fetch from loopback and private addresses (tests only).
    #[arg(long)]
    pub allow_private_mirror: bool,

    /// Most bytes one uploader (key) may store; anonymous uploads share one allowance.
    /// Default: no limit (keys cost nothing; --allow-uploader and --min-free-space protect
    /// the disk from strangers).
    #[arg(long, value_name = "SIZE")]
    pub quota_bytes: Option<ByteSize>,

    /// Most blobs one uploader (key) may store. Default: no limit.
    #[arg(long, value_name = "N")]
    pub quota_blobs: Option<u64>,

    /// Refuse uploads (HTTP 507) that would leave less free space than this on the data
    /// directory's filesystem.
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    pub min_free_space: ByteSize,

    /// `GET /list/<pubkey>` only for that key (a BUD-11 `list` token): who stored what is
    /// nobody else's business.
    #[arg(long)]
    pub private_list: bool,

    /// Who may push images over the OCI registry API at `/v2/` (HTTP basic auth, as skopeo
    /// and podman send it); BUD-11 upload tokens work too. Pulls are anonymous.
    #[arg(
        long,
        env = "QUORUM_OCI_CREDENTIALS",
        hide_env_values = true,
        value_name = "USER:PASSWORD"
    )]
    pub oci_credentials: Option<String>,
}

impl Default for BlossomOptions {
    /// The same values the flags default to.
    fn default() -> Self {
        BlossomOptions {
            max_blob_size: bytesize::ByteSize::gib(2),
            allowed_uploaders: Vec::new(),
            anonymous_uploads: false,
            allow_private_mirror: false,
            quota_bytes: None,
            quota_blobs: None,
            min_free_space: bytesize::ByteSize::gib(1),
            private_list: false,
            oci_credentials: None,
        }
    }
}

/// Options of `quorum up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Data directory: relay data in DATA/relay, blobs in DATA/blossom, DATA/endpoints.json.
    #[arg(long)]
    pub data: PathBuf,

    /// Relay address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7777")]
    pub relay_listen: SocketAddr,

    /// Blossom server address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub blossom_listen: SocketAddr,

    /// Runner DVMs to start, each with its own key (DATA/runners/N/runner.nsec); three, so
    /// that a 2-of-3 quorum can form among them.
    #[arg(long, default_value_t = 3)]
    pub runners: usize,

    /// DEVELOPMENT ONLY: start the runners without a sandbox if bubblewrap is missing.
    #[arg(long)]
    pub unsandboxed_runners: bool,

    /// Also start a Cashu mint (cdk's, in memory, its Lightning backend fake: invoices pay
    /// themselves and its ecash is worth nothing) on a free loopback port, to try payments:
    /// `quorum wallet --mint URL mint N`, priced runners with `--mint URL`.
    #[arg(long)]
    pub mint: bool,

    #[command(flatten)]
    pub relay: RelayOptions,

    #[command(flatten)]
    pub blossom: BlossomOptions,

    /// Also serve the web dashboard (`quorum ui`) of this network on this address, e.g.
    /// 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8080")]
    pub ui: Option<SocketAddr>,
}

/// Options of `quorum ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// Relay to read runs, releases and DVMs from (repeat for several).
    #[arg(long = "relay", value_name = "URL", required = true)]
    pub relays: Vec<String>,

    /// Blossom server to read logs and released files from by sha256 (repeat for several);
    /// the URLs events name are tried too, and whatever they serve is re-hashed.
    #[arg(long = "blossom", value_name = "URL")]
    pub blossom: Vec<String>,

    /// Address to serve the dashboard on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn option_defaults_match_the_flags() {
        #[derive(Parser)]
        struct Both {
            #[command(flatten)]
            relay: RelayOptions,
            #[command(flatten)]
            blossom: BlossomOptions,
        }
        let parsed = Both::parse_from(["x"]);
        assert_eq!(
            parsed.blossom.max_blob_size,
            BlossomOptions::default().max_blob_size
        );
        assert_eq!(
            parsed.blossom.min_free_space,
            BlossomOptions::default().min_free_space
        );
        assert_eq!(parsed.relay.auth, RelayOptions::default().auth);
    }
}
