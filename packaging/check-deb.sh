#!/usr/bin/env bash
# Build the Debian package with cargo-deb and check what is in it:
#   - the files (binary, unit, udev rules, config, docs) at their paths, the config mode 0640;
#   - /etc/modemgate/modemgate.toml listed as a conffile;
#   - maintainer scripts present, with cargo-deb's #DEBHELPER# snippets filled in;
#   - the packaged binary accepts the packaged config (`check-config`).
# Installs cargo-deb if missing (`cargo install cargo-deb --locked`: compiles it, a few minutes).
# MODEMGATE_DEB_PROFILE=dev packages the debug build instead of compiling a release one (quick local checks).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${MODEMGATE_DEB_PROFILE:-release}

if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb"
    start=$(date +%s)
    cargo install cargo-deb --locked
    echo "cargo-deb installed in $(($(date +%s) - start)) s"
fi
cargo deb --version

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
deb=$work/modemgate.deb

echo "== cargo deb --profile $profile"
start=$(date +%s)
cargo deb --locked --profile "$profile" --output "$deb"
echo "package built in $(($(date +%s) - start)) s"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

echo "== dpkg-deb -I"
dpkg-deb -I "$deb"
dpkg-deb -f "$deb" Package | grep -qx modemgate || fail "package name"
dpkg-deb -f "$deb" Depends | grep -q passwd || fail "Depends lacks passwd (useradd in postinst)"

echo "== dpkg-deb -c"
dpkg-deb -c "$deb" | tee "$work/contents"
has() {
    grep -qE "^$1 .* \./$2\$" "$work/contents" || fail "$2 missing or wrong mode (want $1)"
}
has '-rwxr-xr-x' 'usr/bin/modemgate'
has '-rw-r--r--' '(usr/)?lib/systemd/system/modemgate\.service'
has '-rw-r--r--' 'usr/lib/udev/rules\.d/70-modemgate\.rules'
has '-rw-r-----' 'etc/modemgate/modemgate\.toml'
has '-rw-r--r--' 'usr/share/doc/modemgate/README\.md'
has '-rw-r--r--' 'usr/share/doc/modemgate/examples/demo\.toml'

echo "== control files"
mkdir "$work/control"
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/modemgate/modemgate.toml "$work/control/conffiles" || fail "modemgate.toml is not a conffile"
echo "conffiles: $(tr '\n' ' ' <"$work/control/conffiles")"
for script in postinst postrm; do
    [ -x "$work/control/$script" ] || fail "$script missing"
    sh -n "$work/control/$script" || fail "$script does not parse"
    ! grep -q '#DEBHELPER#' "$work/control/$script" || fail "$script still has #DEBHELPER#"
done
grep -q 'useradd --system' "$work/control/postinst" || fail "postinst does not create the user"
grep -q 'udevadm control --reload-rules' "$work/control/postinst" || fail "postinst does not reload udev"
grep -q 'deb-systemd-helper' "$work/control/postinst" || fail "postinst lacks the systemd unit snippet"

echo "== packaged binary on packaged config"
dpkg-deb -x "$deb" "$work/root"
cmp -s "$work/root/usr/lib/udev/rules.d/70-modemgate.rules" udev/70-modemgate.rules || fail "udev rules differ"
"$work/root/usr/bin/modemgate" check-config --config "$work/root/etc/modemgate/modemgate.toml"
echo "check-deb: ok ($(du -h "$deb" | cut -f1) package)"
