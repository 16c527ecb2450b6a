//! Releases: NIP-94 file metadata (kind 1063), the zapstore "NIP-82" app / release / asset
//! shapes (32267 / 30063 / 3063), and our own release binding (kind 8700).
//!
//! The NIP-94 and NIP-82 events are for other Nostr apps to display what we released; the
//! *release binding* is the record a verifier checks: which commit of which repository, which
//! run, which artifacts (name + sha256) and which builders' results attest them. It is signed by
//! the FROST quorum key, so every field is derived from agreed data: artifacts are written sorted
//! by name, attestations sorted by result id, `created_at` is passed in by the caller, and
//! nothing random or clock-dependent is added. Two members building it from the same data get
//! the same event id ([`ReleaseBinding::unsigned`]). `docs/protocol.md` §11 has examples.
//!
//! NIP-82 is not upstream; the shapes follow zapstore's publisher (`zsp`, 2026-07) as far as
//! our digest has them. Unknown tags are ignored everywhere when reading. When building, the
//! NIP-82 events refuse what relay.zapstore.dev rejects (a 3063 or 32267 without a platform of
//! [`ZAPSTORE_PLATFORMS`], a 30063 without a channel), so that a caller learns why at once
//! instead of publishing an event the relay drops.

use std::str::FromStr;

use nostr::{Event, EventBuilder, EventId, Kind, PublicKey, RelayUrl, Tag, Timestamp};

use crate::approval::ArtifactDigest;
use crate::blossom::Sha256Hex;
use crate::nip34::{RepoCoordinate, is_object_id};
use crate::tags::{custom_tag, tags_named};

/// NIP-94 file metadata (regular).
pub const FILE_METADATA: Kind = Kind::Custom(1063);
/// NIP-82 software application (addressable, `d` = package id).
pub const SOFTWARE_APPLICATION: Kind = Kind::Custom(32267);
/// NIP-82 / NIP-51 software release, "release artifact set" (addressable, `d` = `id@version`).
pub const SOFTWARE_RELEASE: Kind = Kind::Custom(30063);
/// NIP-82 software asset (regular), one per binary or variant.
pub const SOFTWARE_ASSET: Kind = Kind::Custom(3063);
/// Quorum CI release binding (regular), signed by the quorum key.
pub const RELEASE_BINDING: Kind = Kind::Custom(8700);

const TAG_URL: &str = "url";
const TAG_MIME: &str = "m";
const TAG_HASH: &str = "x";
const TAG_ORIGINAL_HASH: &str = "ox";
const TAG_SIZE: &str = "size";
const TAG_FALLBACK: &str = "fallback";
const TAG_SUMMARY: &str = "summary";
const TAG_ALT: &str = "alt";
const TAG_D: &str = "d";
const TAG_NAME: &str = "name";
const TAG_ICON: &str = "icon";
const TAG_IMAGE: &str = "image";
const TAG_HASHTAG: &str = "t";
const TAG_PLATFORM: &str = "f";
const TAG_LICENSE: &str = "license";
const TAG_REPOSITORY: &str = "repository";
const TAG_REPO: &str = "a";
const TAG_COMMUNITY: &str = "h";
const TAG_APP: &str = "i";
const TAG_VERSION: &str = "version";
const TAG_CHANNEL: &str = "c";
const TAG_EVENT: &str = "e";
const TAG_FILENAME: &str = "filename";
const TAG_VARIANT: &str = "variant";
const TAG_COMMIT: &str = "commit";
const TAG_MIN_PLATFORM: &str = "min_platform_version";
const TAG_TARGET_PLATFORM: &str = "target_platform_version";
const TAG_CERT_HASH: &str = "apk_certificate_hash";
const TAG_RUN: &str = "run";
/// The binding's commit tag (single-letter, so relays index it; NIP-82 uses `commit`).
const TAG_GIT_COMMIT: &str = "c";
const TAG_APPROVAL: &str = "approval";

/// Why an event is not a valid release event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReleaseError {
    #[error("kind {found} is not a {expected}")]
    WrongKind { expected: &'static str, found: u16 },
    #[error("missing `{0}` tag")]
    MissingTag(&'static str),
    #[error("malformed `{tag}` tag: {reason}")]
    MalformedTag { tag: &'static str, reason: String },
    #[error("`{0}` tag given twice")]
    Duplicate(&'static str),
    #[error(
        "platform {0:?} is not one zapstore accepts (`f` must be one of {list})",
        list = ZAPSTORE_PLATFORMS.join(", ")
    )]
    UnknownPlatform(String),
}

type Result<T> = std::result::Result<T, ReleaseError>;

fn malformed(tag: &'static str, reason: impl Into<String>) -> ReleaseError {
    ReleaseError::MalformedTag {
        tag,
        reason: reason.into(),
    }
}

/// The value of the only `name` tag, if any; twice is an error, an empty value too.
fn optional_value(event: &Event, name: &'static str) -> Result<Option<String>> {
    crate::tags::single_value(event, name).map_err(|e| match e {
        crate::tags::SingleValueError::Duplicate(name) => ReleaseError::Duplicate(name),
        crate::tags::SingleValueError::Empty(name) => malformed(name, "no value"),
    })
}

fn required_value(event: &Event, name: &'static str) -> Result<String> {
    optional_value(event, name)?.ok_or(ReleaseError::MissingTag(name))
}

/// Every first value of the `name` tags (repeatable tags such as `f`, `t`, `fallback`).
fn all_values(event: &Event, name: &'static str) -> Vec<String> {
    tags_named(event, name)
        .filter_map(|values| values.get(1).filter(|v| !v.is_empty()).cloned())
        .collect()
}

fn check_url(tag: &'static str, url: &str) -> Result<()> {
    url::Url::parse(url)
        .map(|_| ())
        .map_err(|e| malformed(tag, format!("{url:?}: {e}")))
}

fn parse_sha256(tag: &'static str, value: &str) -> Result<Sha256Hex> {
    Sha256Hex::parse(value)
        .map_err(|_| malformed(tag, format!("{value:?} is not a 64-hex lowercase sha256")))
}

fn parse_size(event: &Event) -> Result<Option<u64>> {
    optional_value(event, TAG_SIZE)?
        .map(|s| {
            s.parse()
                .map_err(|_| malformed("size", format!("{s:?} is not a number of bytes")))
        })
        .transpose()
}

fn check_mime(mime: &str) -> Result<()> {
    let valid = mime
        .split_once('/')
        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && !mime
            .chars()
            .any(|c| c.is_ascii_uppercase() || c.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(malformed(
            "m",
            format!("{mime:?} is not a lowercase MIME type"),
        ))
    }
}

fn check_kind(event: &Event, kind: Kind, expected: &'static str) -> Result<()> {
    if event.kind == kind {
        Ok(())
    } else {
        Err(ReleaseError::WrongKind {
            expected,
            found: event.kind.as_u16(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// NIP-94 file metadata (1063)
// ---------------------------------------------------------------------------------------------

/// NIP-94 file metadata for one released artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMetadata {
    /// The primary download URL (first Blossom server).
    pub url: String,
    /// MIME type, lowercase.
    pub mime: String,
    /// sha256 of the file as served.
    pub sha256: Sha256Hex,
    /// sha256 before any server-side transformation; Blossom stores bytes unchanged, so for
    /// our artifacts it equals `sha256`.
    pub original_sha256: Option<Sha256Hex>,
    pub size: Option<u64>,
    /// One URL per extra Blossom server holding the same bytes.
    pub fallbacks: Vec<String>,
    pub summary: Option<String>,
    pub alt: Option<String>,
    /// The description.
    pub content: String,
}

impl FileMetadata {
    /// Metadata for an artifact stored unchanged on Blossom servers: `urls[0]` is the `url`,
    /// the rest are `fallback`s, and `ox` = `x`. `None` when `urls` is empty.
    pub fn for_artifact(
        urls: &[String],
        mime: impl Into<String>,
        sha256: Sha256Hex,
        size: u64,
    ) -> Option<Self> {
        let (url, fallbacks) = urls.split_first()?;
        Some(FileMetadata {
            url: url.clone(),
            mime: mime.into(),
            sha256,
            original_sha256: Some(sha256),
            size: Some(size),
            fallbacks: fallbacks.to_vec(),
            summary: None,
            alt: None,
            content: String::new(),
        })
    }

    pub fn to_event_builder(&self) -> EventBuilder {
        let mut tags = vec![
            custom_tag(TAG_URL, [self.url.clone()]),
            custom_tag(TAG_MIME, [self.mime.clone()]),
            custom_tag(TAG_HASH, [self.sha256.to_hex()]),
        ];
        if let Some(ox) = &self.original_sha256 {
            tags.push(custom_tag(TAG_ORIGINAL_HASH, [ox.to_hex()]));
        }
        if let Some(size) = self.size {
            tags.push(custom_tag(TAG_SIZE, [size.to_string()]));
        }
        tags.extend(
            self.fallbacks
                .iter()
                .map(|url| custom_tag(TAG_FALLBACK, [url.clone()])),
        );
        if let Some(summary) = &self.summary {
            tags.push(custom_tag(TAG_SUMMARY, [summary.clone()]));
        }
        if let Some(alt) = &self.alt {
            tags.push(custom_tag(TAG_ALT, [alt.clone()]));
        }
        EventBuilder::new(FILE_METADATA, self.content.clone())
            .tags(tags)
            .allow_self_tagging()
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, FILE_METADATA, "NIP-94 file metadata (1063)")?;
        let url = required_value(event, TAG_URL)?;
        check_url("url", &url)?;
        let mime = required_value(event, TAG_MIME)?;
        check_mime(&mime)?;
        let sha256 = parse_sha256("x", &required_value(event, TAG_HASH)?)?;
        let original_sha256 = optional_value(event, TAG_ORIGINAL_HASH)?
            .map(|ox| parse_sha256("ox", &ox))
            .transpose()?;
        let fallbacks = all_values(event, TAG_FALLBACK);
        for url in &fallbacks {
            check_url("fallback", url)?;
        }
        Ok(FileMetadata {
            url,
            mime,
            sha256,
            original_sha256,
            size: parse_size(event)?,
            fallbacks,
            summary: optional_value(event, TAG_SUMMARY)?,
            alt: optional_value(event, TAG_ALT)?,
            content: event.content.clone(),
        })
    }

    /// Every URL the file can be fetched from, primary first.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.url.as_str()).chain(self.fallbacks.iter().map(String::as_str))
    }
}

// ---------------------------------------------------------------------------------------------
// NIP-82 (zapstore): application 32267, release 30063, asset 3063
// ---------------------------------------------------------------------------------------------

/// The `f` values relay.zapstore.dev accepts (`PlatformIdentifiers` in zapstore/relay's
/// `pkg/events/app.go`); it drops any other value, and rejects a 3063 or 32267 left without one.
pub const ZAPSTORE_PLATFORMS: [&str; 14] = [
    "android-arm64-v8a",
    "android-armeabi-v7a",
    "android-x86",
    "android-x86_64",
    "darwin-arm64",
    "darwin-x86_64",
    "linux-aarch64",
    "linux-x86_64",
    "linux-armv7l",
    "linux-riscv64",
    "windows-aarch64",
    "windows-x86_64",
    "ios-arm64",
    "web",
];

/// Why a machine's platform has no zapstore `f` value we may publish.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("{os}-{arch} has no zapstore platform identifier")]
    Unknown { os: String, arch: String },
    /// zapstore requires `version_code` and `apk_certificate_hash` on every Android asset,
    /// which nothing in a run knows; an Android `f` would only get the asset rejected.
    #[error(
        "{0} is an Android platform: zapstore needs `version_code` and `apk_certificate_hash` on it, which Quorum CI does not set"
    )]
    Android(&'static str),
}

/// zapstore's `f` value for a machine announcing Rust's `std::env::consts::{OS, ARCH}` (as our
/// runners do in their NIP-89 capabilities): `macos` is `darwin`, `aarch64` is `arm64` on
/// darwin and iOS, 32-bit `arm` on Linux is `armv7l`. A value already spelled zapstore's way
/// is kept. Android is refused ([`PlatformError::Android`]).
pub fn zapstore_platform(os: &str, arch: &str) -> std::result::Result<&'static str, PlatformError> {
    let platform = match (os, arch) {
        ("linux", "x86_64") => "linux-x86_64",
        ("linux", "aarch64" | "arm64") => "linux-aarch64",
        ("linux", "arm" | "armv7" | "armv7l") => "linux-armv7l",
        ("linux", "riscv64" | "riscv64gc") => "linux-riscv64",
        ("macos" | "darwin", "aarch64" | "arm64") => "darwin-arm64",
        ("macos" | "darwin", "x86_64") => "darwin-x86_64",
        ("windows", "x86_64") => "windows-x86_64",
        ("windows", "aarch64" | "arm64") => "windows-aarch64",
        ("ios", "aarch64" | "arm64") => "ios-arm64",
        ("android", "aarch64" | "arm64" | "arm64-v8a") => "android-arm64-v8a",
        ("android", "arm" | "armeabi-v7a") => "android-armeabi-v7a",
        ("android", "x86") => "android-x86",
        ("android", "x86_64") => "android-x86_64",
        _ => {
            return Err(PlatformError::Unknown {
                os: os.to_string(),
                arch: arch.to_string(),
            });
        }
    };
    if platform.starts_with("android-") {
        return Err(PlatformError::Android(platform));
    }
    Ok(platform)
}

/// Refuses an empty platform list, or a value zapstore would drop.
fn check_platforms(platforms: &[String]) -> Result<()> {
    if platforms.is_empty() {
        return Err(ReleaseError::MissingTag("f"));
    }
    match platforms
        .iter()
        .find(|f| !ZAPSTORE_PLATFORMS.contains(&f.as_str()))
    {
        Some(unknown) => Err(ReleaseError::UnknownPlatform(unknown.clone())),
        None => Ok(()),
    }
}

/// A software application (kind 32267).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareApplication {
    /// `d`: the package id, e.g. `com.example.app`.
    pub identifier: String,
    pub name: Option<String>,
    pub summary: Option<String>,
    pub icon: Option<String>,
    pub images: Vec<String>,
    pub hashtags: Vec<String>,
    /// `f` platform tags (e.g. `linux-x86_64`): at least one, each of [`ZAPSTORE_PLATFORMS`].
    pub platforms: Vec<String>,
    pub license: Option<String>,
    /// Source repository URL.
    pub repository: Option<String>,
    /// Website (`url`).
    pub website: Option<String>,
    /// The NIP-34 repository (`a`).
    pub repo: Option<RepoCoordinate>,
    /// The community (`h`).
    pub community: Option<PublicKey>,
    /// The full description.
    pub content: String,
}

impl SoftwareApplication {
    pub fn new(identifier: impl Into<String>, platforms: Vec<String>) -> Self {
        SoftwareApplication {
            identifier: identifier.into(),
            name: None,
            summary: None,
            icon: None,
            images: Vec::new(),
            hashtags: Vec::new(),
            platforms,
            license: None,
            repository: None,
            website: None,
            repo: None,
            community: None,
            content: String::new(),
        }
    }

    /// The event; fails without a platform, or with one zapstore does not accept.
    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        check_platforms(&self.platforms)?;
        let mut tags = vec![Tag::identifier(self.identifier.clone())];
        let optional = [
            (TAG_NAME, &self.name),
            (TAG_SUMMARY, &self.summary),
            (TAG_ICON, &self.icon),
            (TAG_LICENSE, &self.license),
            (TAG_REPOSITORY, &self.repository),
            (TAG_URL, &self.website),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                tags.push(custom_tag(name, [value.clone()]));
            }
        }
        tags.extend(
            self.images
                .iter()
                .map(|i| custom_tag(TAG_IMAGE, [i.clone()])),
        );
        tags.extend(
            self.hashtags
                .iter()
                .map(|t| custom_tag(TAG_HASHTAG, [t.clone()])),
        );
        tags.extend(
            self.platforms
                .iter()
                .map(|f| custom_tag(TAG_PLATFORM, [f.clone()])),
        );
        if let Some(repo) = &self.repo {
            tags.push(custom_tag(TAG_REPO, [repo.to_string()]));
        }
        if let Some(community) = &self.community {
            tags.push(custom_tag(TAG_COMMUNITY, [community.to_hex()]));
        }
        Ok(
            EventBuilder::new(SOFTWARE_APPLICATION, self.content.clone())
                .tags(tags)
                .allow_self_tagging(),
        )
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(
            event,
            SOFTWARE_APPLICATION,
            "NIP-82 software application (32267)",
        )?;
        let platforms = all_values(event, TAG_PLATFORM);
        if platforms.is_empty() {
            return Err(ReleaseError::MissingTag("f"));
        }
        let repo = optional_value(event, TAG_REPO)?
            .map(|a| RepoCoordinate::from_str(&a).map_err(|e| malformed("a", e.to_string())))
            .transpose()?;
        let community = optional_value(event, TAG_COMMUNITY)?
            .map(|h| {
                PublicKey::from_hex(&h)
                    .map_err(|_| malformed("h", format!("{h:?} is not a 64-hex public key")))
            })
            .transpose()?;
        Ok(SoftwareApplication {
            identifier: required_value(event, TAG_D)?,
            name: optional_value(event, TAG_NAME)?,
            summary: optional_value(event, TAG_SUMMARY)?,
            icon: optional_value(event, TAG_ICON)?,
            images: all_values(event, TAG_IMAGE),
            hashtags: all_values(event, TAG_HASHTAG),
            platforms,
            license: optional_value(event, TAG_LICENSE)?,
            repository: optional_value(event, TAG_REPOSITORY)?,
            website: optional_value(event, TAG_URL)?,
            repo,
            community,
            content: event.content.clone(),
        })
    }
}

/// A reference to an asset event: `["e", ID, RELAY?]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRef {
    pub id: EventId,
    pub relay: Option<RelayUrl>,
}

/// A software release (kind 30063): `d` = `<app id>@<version>`, `e` → asset events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareRelease {
    /// `i`: the application's package id.
    pub app: String,
    pub version: String,
    /// `c`: `main`, `beta`, `nightly` or `dev` (not checked: zapstore may add channels).
    /// Optional when reading; zapstore requires it, so building refuses a release without it.
    pub channel: Option<String>,
    pub platforms: Vec<String>,
    /// The asset events (3063, or legacy 1063).
    pub assets: Vec<AssetRef>,
    /// Release notes.
    pub content: String,
}

impl SoftwareRelease {
    /// The `d` tag: `<app>@<version>`.
    pub fn identifier(&self) -> String {
        format!("{}@{}", self.app, self.version)
    }

    /// The event; fails without a channel (`c`), which zapstore requires.
    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        let channel = self
            .channel
            .as_ref()
            .filter(|c| !c.is_empty())
            .ok_or(ReleaseError::MissingTag("c"))?;
        let mut tags = vec![
            Tag::identifier(self.identifier()),
            custom_tag(TAG_APP, [self.app.clone()]),
            custom_tag(TAG_VERSION, [self.version.clone()]),
            custom_tag(TAG_CHANNEL, [channel.clone()]),
        ];
        tags.extend(
            self.platforms
                .iter()
                .map(|f| custom_tag(TAG_PLATFORM, [f.clone()])),
        );
        tags.extend(self.assets.iter().map(|asset| {
            let mut values = vec![asset.id.to_hex()];
            values.extend(asset.relay.as_ref().map(|r| r.to_string()));
            custom_tag(TAG_EVENT, values)
        }));
        Ok(EventBuilder::new(SOFTWARE_RELEASE, self.content.clone())
            .tags(tags)
            .allow_self_tagging())
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, SOFTWARE_RELEASE, "NIP-82 software release (30063)")?;
        let identifier = required_value(event, TAG_D)?;
        let app = required_value(event, TAG_APP)?;
        let version = required_value(event, TAG_VERSION)?;
        if identifier != format!("{app}@{version}") {
            return Err(malformed(
                "d",
                format!("{identifier:?} is not `i`@`version` ({app}@{version})"),
            ));
        }
        let mut assets = Vec::new();
        for values in tags_named(event, TAG_EVENT) {
            let hex = values.get(1).ok_or_else(|| malformed("e", "no event id"))?;
            let id = EventId::from_hex(hex)
                .map_err(|_| malformed("e", format!("{hex:?} is not a 64-hex event id")))?;
            let relay = match values.get(2).map(String::as_str) {
                None | Some("") => None,
                Some(url) => Some(
                    RelayUrl::parse(url)
                        .map_err(|e| malformed("e", format!("relay {url:?}: {e}")))?,
                ),
            };
            assets.push(AssetRef { id, relay });
        }
        Ok(SoftwareRelease {
            app,
            version,
            channel: optional_value(event, TAG_CHANNEL)?,
            platforms: all_values(event, TAG_PLATFORM),
            assets,
            content: event.content.clone(),
        })
    }
}

/// A software asset (kind 3063): one binary of one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareAsset {
    /// `i`: the application's package id.
    pub app: String,
    pub sha256: Sha256Hex,
    pub version: String,
    /// Download URLs (Blossom), at least one.
    pub urls: Vec<String>,
    pub mime: String,
    pub size: Option<u64>,
    /// `f`: at least one, each of [`ZAPSTORE_PLATFORMS`] (when building).
    pub platforms: Vec<String>,
    pub filename: Option<String>,
    pub variant: Option<String>,
    /// The git commit it was built from (reproducible-build linkage).
    pub commit: Option<String>,
    pub min_platform_version: Option<String>,
    pub target_platform_version: Option<String>,
    /// Required by zapstore for Android packages; optional here.
    pub apk_certificate_hash: Option<String>,
}

impl SoftwareAsset {
    /// The event; fails without a URL, without a platform or with one zapstore does not accept.
    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        if self.urls.is_empty() {
            return Err(ReleaseError::MissingTag("url"));
        }
        check_platforms(&self.platforms)?;
        let mut tags = vec![
            custom_tag(TAG_APP, [self.app.clone()]),
            custom_tag(TAG_HASH, [self.sha256.to_hex()]),
            custom_tag(TAG_VERSION, [self.version.clone()]),
        ];
        tags.extend(self.urls.iter().map(|u| custom_tag(TAG_URL, [u.clone()])));
        tags.push(custom_tag(TAG_MIME, [self.mime.clone()]));
        if let Some(size) = self.size {
            tags.push(custom_tag(TAG_SIZE, [size.to_string()]));
        }
        tags.extend(
            self.platforms
                .iter()
                .map(|f| custom_tag(TAG_PLATFORM, [f.clone()])),
        );
        let optional = [
            (TAG_FILENAME, &self.filename),
            (TAG_VARIANT, &self.variant),
            (TAG_COMMIT, &self.commit),
            (TAG_MIN_PLATFORM, &self.min_platform_version),
            (TAG_TARGET_PLATFORM, &self.target_platform_version),
            (TAG_CERT_HASH, &self.apk_certificate_hash),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                tags.push(custom_tag(name, [value.clone()]));
            }
        }
        Ok(EventBuilder::new(SOFTWARE_ASSET, "")
            .tags(tags)
            .allow_self_tagging())
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, SOFTWARE_ASSET, "NIP-82 software asset (3063)")?;
        let urls = all_values(event, TAG_URL);
        if urls.is_empty() {
            return Err(ReleaseError::MissingTag("url"));
        }
        for url in &urls {
            check_url("url", url)?;
        }
        let mime = required_value(event, TAG_MIME)?;
        check_mime(&mime)?;
        let commit = optional_value(event, TAG_COMMIT)?;
        if let Some(commit) = &commit
            && !is_object_id(commit)
        {
            return Err(malformed(
                "commit",
                format!("{commit:?} is not a full 40- or 64-hex lowercase commit id"),
            ));
        }
        Ok(SoftwareAsset {
            app: required_value(event, TAG_APP)?,
            sha256: parse_sha256("x", &required_value(event, TAG_HASH)?)?,
            version: required_value(event, TAG_VERSION)?,
            urls,
            mime,
            size: parse_size(event)?,
            platforms: all_values(event, TAG_PLATFORM),
            filename: optional_value(event, TAG_FILENAME)?,
            variant: optional_value(event, TAG_VARIANT)?,
            commit,
            min_platform_version: optional_value(event, TAG_MIN_PLATFORM)?,
            target_platform_version: optional_value(event, TAG_TARGET_PLATFORM)?,
            apk_certificate_hash: optional_value(event, TAG_CERT_HASH)?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Our release binding (8700)
// ---------------------------------------------------------------------------------------------

/// One builder's attestation: the result event (kind 6702) in which `builder` reported the
/// artifact hashes. `["e", RESULT_ID, "", BUILDER]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attestation {
    pub result: EventId,
    pub builder: PublicKey,
}

/// What a release is: the binding a verifier checks, signed by the quorum key (kind 8700).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseBinding {
    /// The repository (`a`).
    pub repo: RepoCoordinate,
    /// The commit (`c`), 40 or 64 lowercase hex.
    pub commit: String,
    /// The run id (`run`, 64 hex, docs/protocol.md §9).
    pub run: String,
    /// The version label (`version`), e.g. the tag name; optional.
    pub version: Option<String>,
    /// The artifacts, `["x", SHA256, NAME]`, sorted by name; at least one.
    pub artifacts: Vec<ArtifactDigest>,
    /// The builders' result events, sorted by result id; at least one.
    pub attestations: Vec<Attestation>,
    /// The approval requests (8701) whose gates passed before this was signed
    /// (`["approval", <8701 id>]`), sorted; one per approval gate the release depends on.
    pub approvals: Vec<EventId>,
    /// Release notes (agreed data; empty by default).
    pub content: String,
}

impl ReleaseBinding {
    /// Sorts artifacts and attestations into canonical order and checks the binding.
    pub fn new(
        repo: RepoCoordinate,
        commit: impl Into<String>,
        run: impl Into<String>,
        mut artifacts: Vec<ArtifactDigest>,
        mut attestations: Vec<Attestation>,
    ) -> Result<Self> {
        artifacts.sort();
        attestations.sort();
        let binding = ReleaseBinding {
            repo,
            commit: commit.into(),
            run: run.into(),
            version: None,
            artifacts,
            attestations,
            approvals: Vec::new(),
            content: String::new(),
        };
        binding.validate()?;
        Ok(binding)
    }

    /// The binding naming the approval requests (8701) whose gates passed.
    pub fn with_approvals(mut self, mut approvals: Vec<EventId>) -> Self {
        approvals.sort();
        approvals.dedup();
        self.approvals = approvals;
        self
    }

    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Checks ids, hashes, uniqueness and canonical order.
    pub fn validate(&self) -> Result<()> {
        if !is_object_id(&self.commit) {
            return Err(malformed(
                "c",
                format!(
                    "{:?} is not a full 40- or 64-hex lowercase commit id",
                    self.commit
                ),
            ));
        }
        let hex64 = self.run.len() == 64
            && self
                .run
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex64 {
            return Err(malformed(
                "run",
                format!("{:?} is not a 64-hex run id", self.run),
            ));
        }
        if self.artifacts.is_empty() {
            return Err(ReleaseError::MissingTag("x"));
        }
        if self.attestations.is_empty() {
            return Err(ReleaseError::MissingTag("e"));
        }
        for pair in self.artifacts.windows(2) {
            if pair[0].name >= pair[1].name {
                return Err(malformed(
                    "x",
                    format!(
                        "artifact {:?} is listed twice or out of order (sorted by name)",
                        pair[1].name
                    ),
                ));
            }
        }
        for pair in self.approvals.windows(2) {
            if pair[0] >= pair[1] {
                return Err(malformed(
                    "approval",
                    format!(
                        "approval request {} is listed twice or out of order (sorted by id)",
                        pair[1]
                    ),
                ));
            }
        }
        for pair in self.attestations.windows(2) {
            if pair[0].result >= pair[1].result {
                return Err(malformed(
                    "e",
                    format!(
                        "result {} is listed twice or out of order (sorted by id)",
                        pair[1].result
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The binding with `created_at`, ready to sign; fails if [`ReleaseBinding::validate`] does.
    pub fn to_event_builder(&self, created_at: Timestamp) -> Result<EventBuilder> {
        self.validate()?;
        let mut tags = vec![
            custom_tag(TAG_REPO, [self.repo.to_string()]),
            custom_tag(TAG_GIT_COMMIT, [self.commit.clone()]),
            custom_tag(TAG_RUN, [self.run.clone()]),
        ];
        if let Some(version) = &self.version {
            tags.push(custom_tag(TAG_VERSION, [version.clone()]));
        }
        tags.extend(self.artifacts.iter().map(ArtifactDigest::to_tag));
        tags.extend(self.attestations.iter().map(|a| {
            custom_tag(
                TAG_EVENT,
                [a.result.to_hex(), String::new(), a.builder.to_hex()],
            )
        }));
        tags.extend(
            self.approvals
                .iter()
                .map(|id| custom_tag(TAG_APPROVAL, [id.to_hex()])),
        );
        Ok(EventBuilder::new(RELEASE_BINDING, self.content.clone())
            .tags(tags)
            .custom_created_at(created_at)
            .allow_self_tagging())
    }

    /// The unsigned event the quorum signs: the same for every member given the same data.
    pub fn unsigned(
        &self,
        quorum: PublicKey,
        created_at: Timestamp,
    ) -> Result<nostr::UnsignedEvent> {
        let mut unsigned = self.to_event_builder(created_at)?.build(quorum);
        unsigned.ensure_id();
        Ok(unsigned)
    }

    /// Parses a binding; artifacts and attestations must be in canonical order.
    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, RELEASE_BINDING, "Quorum CI release binding (8700)")?;
        let repo = required_value(event, TAG_REPO)?;
        let repo = RepoCoordinate::from_str(&repo).map_err(|e| malformed("a", e.to_string()))?;
        let artifacts = tags_named(event, TAG_HASH)
            .map(|values| ArtifactDigest::parse(&values[1..]).map_err(|e| malformed("x", e)))
            .collect::<Result<Vec<_>>>()?;
        let mut attestations = Vec::new();
        for values in tags_named(event, TAG_EVENT) {
            let hex = values.get(1).map(String::as_str).unwrap_or_default();
            let result = EventId::from_hex(hex)
                .map_err(|_| malformed("e", format!("{hex:?} is not a 64-hex event id")))?;
            let key = values.get(3).map(String::as_str).unwrap_or_default();
            let builder = PublicKey::from_hex(key).map_err(|_| {
                malformed(
                    "e",
                    format!("result {hex}: builder {key:?} (element 3) is not a 64-hex public key"),
                )
            })?;
            attestations.push(Attestation { result, builder });
        }
        let approvals = tags_named(event, TAG_APPROVAL)
            .map(|values| {
                let hex = values.get(1).map(String::as_str).unwrap_or_default();
                EventId::from_hex(hex)
                    .map_err(|_| malformed("approval", format!("{hex:?} is not a 64-hex event id")))
            })
            .collect::<Result<Vec<_>>>()?;
        let binding = ReleaseBinding {
            repo,
            commit: required_value(event, TAG_GIT_COMMIT)?,
            run: required_value(event, TAG_RUN)?,
            version: optional_value(event, TAG_VERSION)?,
            artifacts,
            attestations,
            approvals,
            content: event.content.clone(),
        };
        binding.validate()?;
        Ok(binding)
    }

    /// The artifact named `name`.
    pub fn artifact(&self, name: &str) -> Option<&ArtifactDigest> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// Whether the release contains a file with this hash.
    pub fn contains(&self, sha256: &Sha256Hex) -> bool {
        self.artifacts.iter().any(|a| a.sha256 == *sha256)
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn sha(byte: u8) -> Sha256Hex {
        Sha256Hex::from_bytes([byte; 32])
    }

    fn sign(builder: EventBuilder, keys: &Keys) -> Event {
        builder.sign_with_keys(keys).unwrap()
    }

    fn event_with_tags(kind: Kind, tags: Vec<Vec<String>>, keys: &Keys) -> Event {
        // Tag::custom, not Tag::parse: parse would normalise standard tags (an uppercase `x`).
        let tags: Vec<Tag> = tags
            .into_iter()
            .map(|t| custom_tag(&t[0], t[1..].to_vec()))
            .collect();
        sign(EventBuilder::new(kind, "").tags(tags), keys)
    }

    fn owned(tags: &[&[&str]]) -> Vec<Vec<String>> {
        tags.iter()
            .map(|t| t.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn file_metadata_round_trips_with_fallbacks() {
        let keys = Keys::generate();
        let urls = vec![
            format!("https://a.example/{}.tar", sha(1)),
            format!("https://b.example/{}.tar", sha(1)),
            format!("https://c.example/{}.tar", sha(1)),
        ];
        let mut meta =
            FileMetadata::for_artifact(&urls, "application/x-tar", sha(1), 10240).unwrap();
        meta.summary = Some("app 1.0.0 for linux".into());
        meta.alt = Some("release archive".into());
        meta.content = "app 1.0.0".into();
        let event = sign(meta.to_event_builder(), &keys);
        let parsed = FileMetadata::from_event(&event).unwrap();
        assert_eq!(parsed, meta);
        assert_eq!(parsed.fallbacks.len(), 2);
        assert_eq!(parsed.original_sha256, Some(sha(1)));
        assert_eq!(parsed.urls().collect::<Vec<_>>(), urls);
        assert!(FileMetadata::for_artifact(&[], "a/b", sha(1), 1).is_none());
    }

    #[test]
    fn malformed_file_metadata_names_the_tag() {
        let keys = Keys::generate();
        let x = sha(1).to_hex();
        let base: &[&[&str]] = &[
            &["url", "https://a.example/f"],
            &["m", "application/x-tar"],
            &["x", &x],
        ];
        let with = |extra: &[&str]| {
            let mut tags = owned(base);
            tags.push(extra.iter().map(|s| s.to_string()).collect());
            tags
        };
        let without = |name: &str| {
            owned(base)
                .into_iter()
                .filter(|t| t[0] != name)
                .collect::<Vec<_>>()
        };
        let cases: Vec<(Vec<Vec<String>>, &str)> = vec![
            (without("url"), "missing `url`"),
            (without("m"), "missing `m`"),
            (without("x"), "missing `x`"),
            (
                with(&["url", "https://b.example/f"]),
                "`url` tag given twice",
            ),
            (with(&["size", "big"]), "`size`"),
            (with(&["ox", "abc"]), "`ox`"),
            (with(&["fallback", "not a url"]), "`fallback`"),
        ];
        for (tags, needle) in cases {
            let event = event_with_tags(FILE_METADATA, tags.clone(), &keys);
            let err = FileMetadata::from_event(&event).unwrap_err();
            assert!(err.to_string().contains(needle), "{tags:?}: {err}");
        }
        let bad_mime = owned(&[&["url", "https://a.example/f"], &["m", "Text"], &["x", &x]]);
        let err =
            FileMetadata::from_event(&event_with_tags(FILE_METADATA, bad_mime, &keys)).unwrap_err();
        assert!(err.to_string().contains("`m`"), "{err}");
        let upper = owned(&[
            &["url", "https://a.example/f"],
            &["m", "a/b"],
            &["x", &sha(0xab).to_hex().to_uppercase()],
        ]);
        let err =
            FileMetadata::from_event(&event_with_tags(FILE_METADATA, upper, &keys)).unwrap_err();
        assert!(err.to_string().contains("`x`"), "{err}");
    }

    #[test]
    fn nip82_events_round_trip() {
        let keys = Keys::generate();
        let mut app = SoftwareApplication::new("dev.quorum.app", vec!["linux-x86_64".into()]);
        app.name = Some("App".into());
        app.summary = Some("an app".into());
        app.icon = Some(format!("https://cdn.example/{}", sha(3)));
        app.images = vec!["https://cdn.example/shot.png".into()];
        app.hashtags = vec!["ci".into()];
        app.license = Some("MIT".into());
        app.repository = Some("https://git.example/app".into());
        app.website = Some("https://app.example".into());
        app.repo = Some(RepoCoordinate::new(keys.public_key(), "app"));
        app.community = Some(Keys::generate().public_key());
        app.content = "long description".into();
        let event = sign(app.to_event_builder().unwrap(), &keys);
        assert_eq!(SoftwareApplication::from_event(&event).unwrap(), app);

        let asset = SoftwareAsset {
            app: "dev.quorum.app".into(),
            sha256: sha(4),
            version: "1.2.3".into(),
            urls: vec!["https://a.example/x".into(), "https://b.example/x".into()],
            mime: "application/x-tar".into(),
            size: Some(1234),
            platforms: vec!["linux-x86_64".into()],
            filename: Some("app.tar".into()),
            variant: None,
            commit: Some(COMMIT.into()),
            min_platform_version: None,
            target_platform_version: None,
            apk_certificate_hash: None,
        };
        let asset_event = sign(asset.to_event_builder().unwrap(), &keys);
        assert_eq!(SoftwareAsset::from_event(&asset_event).unwrap(), asset);

        let release = SoftwareRelease {
            app: "dev.quorum.app".into(),
            version: "1.2.3".into(),
            channel: Some("main".into()),
            platforms: vec!["linux-x86_64".into()],
            assets: vec![AssetRef {
                id: asset_event.id,
                relay: Some(RelayUrl::parse("wss://relay.example").unwrap()),
            }],
            content: "notes".into(),
        };
        let event = sign(release.to_event_builder().unwrap(), &keys);
        assert_eq!(event.tags.identifier(), Some("dev.quorum.app@1.2.3"));
        assert_eq!(SoftwareRelease::from_event(&event).unwrap(), release);
    }

    #[test]
    fn malformed_nip82_events_name_the_tag() {
        let keys = Keys::generate();
        let app = event_with_tags(SOFTWARE_APPLICATION, owned(&[&["d", "x"]]), &keys);
        assert_eq!(
            SoftwareApplication::from_event(&app),
            Err(ReleaseError::MissingTag("f"))
        );
        assert!(
            SoftwareApplication::new("x", vec![])
                .to_event_builder()
                .is_err()
        );
        let bad_a = event_with_tags(
            SOFTWARE_APPLICATION,
            owned(&[&["d", "x"], &["f", "linux"], &["a", "30617:nope:x"]]),
            &keys,
        );
        let err = SoftwareApplication::from_event(&bad_a).unwrap_err();
        assert!(err.to_string().contains("`a`"), "{err}");

        let mismatch = event_with_tags(
            SOFTWARE_RELEASE,
            owned(&[&["d", "x@2"], &["i", "x"], &["version", "1"]]),
            &keys,
        );
        let err = SoftwareRelease::from_event(&mismatch).unwrap_err();
        assert!(err.to_string().contains("`d`"), "{err}");
        let bad_e = event_with_tags(
            SOFTWARE_RELEASE,
            owned(&[&["d", "x@1"], &["i", "x"], &["version", "1"], &["e", "zz"]]),
            &keys,
        );
        let err = SoftwareRelease::from_event(&bad_e).unwrap_err();
        assert!(err.to_string().contains("`e`"), "{err}");

        let x = sha(1).to_hex();
        let no_url = event_with_tags(
            SOFTWARE_ASSET,
            owned(&[&["i", "x"], &["x", &x], &["version", "1"], &["m", "a/b"]]),
            &keys,
        );
        assert_eq!(
            SoftwareAsset::from_event(&no_url),
            Err(ReleaseError::MissingTag("url"))
        );
        let bad_commit = event_with_tags(
            SOFTWARE_ASSET,
            owned(&[
                &["i", "x"],
                &["x", &x],
                &["version", "1"],
                &["m", "a/b"],
                &["url", "https://a.example/x"],
                &["commit", "main"],
            ]),
            &keys,
        );
        let err = SoftwareAsset::from_event(&bad_commit).unwrap_err();
        assert!(err.to_string().contains("`commit`"), "{err}");
    }

    #[test]
    fn runner_platforms_map_to_zapstore_spelling() {
        let cases = [
            ("linux", "x86_64", "linux-x86_64"),
            ("linux", "aarch64", "linux-aarch64"),
            ("linux", "arm", "linux-armv7l"),
            ("linux", "riscv64", "linux-riscv64"),
            ("macos", "aarch64", "darwin-arm64"),
            ("macos", "x86_64", "darwin-x86_64"),
            ("darwin", "arm64", "darwin-arm64"),
            ("windows", "x86_64", "windows-x86_64"),
            ("windows", "aarch64", "windows-aarch64"),
            ("ios", "aarch64", "ios-arm64"),
        ];
        for (os, arch, expected) in cases {
            assert_eq!(zapstore_platform(os, arch), Ok(expected), "{os}-{arch}");
            assert!(ZAPSTORE_PLATFORMS.contains(&expected));
        }
        assert!(matches!(
            zapstore_platform("freebsd", "x86_64"),
            Err(PlatformError::Unknown { .. })
        ));
        assert!(zapstore_platform("linux", "mips").is_err());
        assert!(zapstore_platform("unknown", "unknown").is_err());
        // Android assets need tags a run cannot supply: refused with that reason.
        let err = zapstore_platform("android", "aarch64").unwrap_err();
        assert_eq!(err, PlatformError::Android("android-arm64-v8a"));
        assert!(err.to_string().contains("apk_certificate_hash"), "{err}");
    }

    fn asset_on(platforms: &[&str]) -> SoftwareAsset {
        SoftwareAsset {
            app: "dev.quorum.app".into(),
            sha256: sha(4),
            version: "1.2.3".into(),
            urls: vec!["https://a.example/x".into()],
            mime: "application/x-tar".into(),
            size: None,
            platforms: platforms.iter().map(|s| s.to_string()).collect(),
            filename: None,
            variant: None,
            commit: None,
            min_platform_version: None,
            target_platform_version: None,
            apk_certificate_hash: None,
        }
    }

    #[test]
    fn nip82_builders_refuse_what_zapstore_rejects() {
        // No platform, or one zapstore drops: no 3063, no 32267.
        assert_eq!(
            asset_on(&[]).to_event_builder().err(),
            Some(ReleaseError::MissingTag("f"))
        );
        for bad in ["unknown", "macos-aarch64", "linux-arm"] {
            let err = asset_on(&["linux-x86_64", bad])
                .to_event_builder()
                .unwrap_err();
            assert_eq!(err, ReleaseError::UnknownPlatform(bad.into()));
            assert!(err.to_string().contains("darwin-arm64"), "{err}");
            let app = SoftwareApplication::new("x", vec![bad.into()]);
            assert_eq!(
                app.to_event_builder().err(),
                Some(ReleaseError::UnknownPlatform(bad.into()))
            );
        }
        for good in ZAPSTORE_PLATFORMS {
            assert!(asset_on(&[good]).to_event_builder().is_ok(), "{good}");
        }
        // No channel: no 30063 (zapstore requires `c`); with one, it is tagged.
        let mut release = SoftwareRelease {
            app: "x".into(),
            version: "1".into(),
            channel: None,
            platforms: vec![],
            assets: vec![],
            content: String::new(),
        };
        assert_eq!(
            release.to_event_builder().err(),
            Some(ReleaseError::MissingTag("c"))
        );
        release.channel = Some(String::new());
        assert!(release.to_event_builder().is_err());
        release.channel = Some("main".into());
        let event = sign(release.to_event_builder().unwrap(), &Keys::generate());
        assert_eq!(
            all_values(&event, "c"),
            vec!["main".to_string()],
            "{:?}",
            event.tags
        );
    }

    fn sample_binding() -> ReleaseBinding {
        let owner = Keys::parse(&"01".repeat(32)).unwrap().public_key();
        let builder_a = Keys::parse(&"02".repeat(32)).unwrap().public_key();
        let builder_b = Keys::parse(&"03".repeat(32)).unwrap().public_key();
        ReleaseBinding::new(
            RepoCoordinate::new(owner, "app"),
            COMMIT,
            "5f".repeat(32),
            vec![
                ArtifactDigest::new("out/b", sha(2)),
                ArtifactDigest::new("out/a", sha(1)),
            ],
            vec![
                Attestation {
                    result: EventId::from_hex(&"cc".repeat(32)).unwrap(),
                    builder: builder_b,
                },
                Attestation {
                    result: EventId::from_hex(&"aa".repeat(32)).unwrap(),
                    builder: builder_a,
                },
            ],
        )
        .unwrap()
        .with_version("v1.0.0")
    }

    #[test]
    fn binding_round_trips_in_canonical_order() {
        let quorum = Keys::generate();
        let binding = sample_binding();
        assert_eq!(binding.artifacts[0].name, "out/a");
        let event = sign(
            binding
                .to_event_builder(Timestamp::from(1_800_000_000))
                .unwrap(),
            &quorum,
        );
        assert_eq!(event.created_at, Timestamp::from(1_800_000_000));
        assert_eq!(ReleaseBinding::from_event(&event).unwrap(), binding);
        assert!(binding.contains(&sha(2)));
        assert_eq!(binding.artifact("out/b").map(|a| a.sha256), Some(sha(2)));
    }

    #[test]
    fn binding_is_deterministic() {
        let quorum = Keys::parse(&"07".repeat(32)).unwrap().public_key();
        let at = Timestamp::from(1_800_000_000);
        let a = sample_binding().unsigned(quorum, at).unwrap();
        // Same data given in another order: same event id.
        let mut shuffled = sample_binding();
        shuffled.artifacts.reverse();
        shuffled.attestations.reverse();
        let b = ReleaseBinding::new(
            shuffled.repo,
            shuffled.commit,
            shuffled.run,
            shuffled.artifacts,
            shuffled.attestations,
        )
        .unwrap()
        .with_version("v1.0.0")
        .unsigned(quorum, at)
        .unwrap();
        assert_eq!(a.id, b.id);
        assert!(a.id.is_some());
        let other_time = sample_binding()
            .unsigned(quorum, Timestamp::from(1_800_000_001))
            .unwrap();
        assert_ne!(a.id, other_time.id);
    }

    #[test]
    fn bad_bindings_name_the_tag() {
        let keys = Keys::generate();
        let mut b = sample_binding();
        b.artifacts.reverse();
        let err = b.to_event_builder(Timestamp::from(1)).unwrap_err();
        assert!(err.to_string().contains("`x`"), "{err}");
        let mut b = sample_binding();
        b.attestations.push(b.attestations[1]);
        assert!(b.validate().unwrap_err().to_string().contains("`e`"));
        let mut b = sample_binding();
        b.attestations.clear();
        assert_eq!(b.validate(), Err(ReleaseError::MissingTag("e")));
        let mut b = sample_binding();
        b.commit = "HEAD".into();
        assert!(b.validate().unwrap_err().to_string().contains("`c`"));
        let mut b = sample_binding();
        b.run = "12".into();
        assert!(b.validate().unwrap_err().to_string().contains("`run`"));

        let good = sign(
            sample_binding()
                .to_event_builder(Timestamp::from(1))
                .unwrap(),
            &keys,
        );
        let mut tags: Vec<Vec<String>> = good.tags.iter().map(|t| t.clone().to_vec()).collect();
        let e = tags.iter_mut().find(|t| t[0] == "e").unwrap();
        e.truncate(2);
        let err =
            ReleaseBinding::from_event(&event_with_tags(RELEASE_BINDING, tags, &keys)).unwrap_err();
        assert!(err.to_string().contains("builder"), "{err}");
        let wrong = event_with_tags(FILE_METADATA, vec![], &keys);
        assert!(matches!(
            ReleaseBinding::from_event(&wrong),
            Err(ReleaseError::WrongKind { found: 1063, .. })
        ));
    }
}
