//! A step script that writes an OCI image layout, for tests of `oci:` artifacts.

/// Writes an OCI image layout in `img/` with POSIX shell tools only (busybox's or GNU's), byte
/// for byte the same on every builder with the same tools and user: one uncompressed layer
/// (entries named in order, mtime 0, numeric owner), a config and a manifest written with
/// printf, each blob named by its sha256.
pub const MAKE_OCI_LAYOUT: &str = r#"set -eu
mkdir -p l/etc img/blobs/sha256
printf 'built by a quorum\n' > l/etc/hello
chmod 755 l/etc
chmod 644 l/etc/hello
touch -d @0 l/etc l/etc/hello
tar -c --numeric-owner --no-recursion -f layer.tar -C l etc etc/hello
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { echo $(($(wc -c < "$1"))); }
blob() { mv "$1" "img/blobs/sha256/$2"; }
L=$(sha layer.tar); LS=$(size layer.tar); blob layer.tar "$L"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$L" > config.json
C=$(sha config.json); CS=$(size config.json); blob config.json "$C"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' "$C" "$CS" "$L" "$LS" > manifest.json
M=$(sha manifest.json); MS=$(size manifest.json); blob manifest.json "$M"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' "$M" "$MS" > img/index.json
printf '{"imageLayoutVersion":"1.0.0"}' > img/oci-layout
"#;
