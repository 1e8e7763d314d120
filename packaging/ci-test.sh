#!/usr/bin/env bash
# Packages, end to end: builds the .deb and .rpm, installs the .deb, checks its files
# and its system user, runs the installed binary as that user on the packaged config,
# purges the package and checks that the data went with it; lists the .rpm; verifies
# the systemd unit when systemd-analyze is available. Needs root (dpkg, setpriv).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n--> %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# listening_addr LOG PID WHAT: the address of the process PID's `listening http=` line
# in LOG, waited for (10 s at most); fails if the process exits or never says it.
listening_addr() {
  local found=""
  for _ in $(seq 1 100); do
    found=$(sed -n 's/.*listening http=\([0-9.:]*\).*/\1/p' "$1" | head -n 1)
    [ -n "$found" ] && { echo "$found"; return; }
    kill -0 "$2" 2>/dev/null || { cat "$1" >&2; fail "$3 exited"; }
    sleep 0.1
  done
  cat "$1" >&2
  fail "no 'listening http=' line from $3"
}

[ "$(id -u)" = 0 ] || fail "run as root: the script installs and purges a package"

step "tools"
export DEBIAN_FRONTEND=noninteractive
missing=()
command -v dpkg-deb >/dev/null || missing+=(dpkg-dev)
command -v rpm >/dev/null || missing+=(rpm)
command -v curl >/dev/null || missing+=(curl)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v lintian >/dev/null || missing+=(lintian)
command -v rpmlint >/dev/null || missing+=(rpmlint)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "build the packages"
# An explicit target directory: build.sh must follow it, not assume ./target.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
mapfile -t packages < <(bash packaging/build.sh)
deb=${packages[0]}
rpm_file=${packages[1]}
case "$deb$rpm_file" in /*/*) ;; *) fail "build.sh printed relative paths: $deb $rpm_file" ;; esac
[ "${rpm_file:0:1}" = / ] || fail "the .rpm path is relative: $rpm_file"
echo "deb: $deb ($(stat -c %s "$deb") bytes)"
echo "rpm: $rpm_file ($(stat -c %s "$rpm_file") bytes)"

step "the .deb's contents"
# Checks read whole pipelines: `grep -q` would stop at its first match, and the
# writer it leaves behind dies of SIGPIPE, which pipefail counts as a failure.
dpkg-deb --contents "$deb"
dpkg-deb --field "$deb" Package Version Depends
dpkg-deb --ctrl-tarfile "$deb" | tar -tf - | grep -x './conffiles' || fail "no conffiles"
dpkg-deb --info "$deb" conffiles | grep -x '/etc/likewise/likewise.toml' \
  || fail "the config file is not a conffile"
dpkg-deb --info "$deb" conffiles | grep -x '/etc/likewise/edge.toml' \
  || fail "the edge's config file is not a conffile"

step "lintian (only the overrides in packaging/debian/lintian-overrides are accepted)"
lintian --fail-on error,warning --tag-display-limit 0 "$deb" 2>&1 | grep -v 'root privileges' || true
lintian --fail-on error,warning "$deb" >/dev/null 2>&1 || fail "lintian reports errors or warnings"
deb_files=$(dpkg-deb --contents "$deb")
for f in ./usr/share/doc/likewise/copyright ./usr/share/doc/likewise/changelog.Debian.gz \
  ./usr/share/doc/likewise/changelog.gz ./usr/share/man/man1/likewise.1.gz \
  ./usr/share/man/man1/likewise-serve.1.gz ./usr/share/man/man1/likewise-edge.1.gz ./usr/share/man/man1/likewise-backup.1.gz \
  ./usr/share/man/man1/likewise-restore.1.gz ./usr/share/man/man1/likewise-admin-token.1.gz \
  ./usr/share/likewise/grafana/likewise.json; do
  grep -q " $f\$" <<<"$deb_files" || fail "the .deb lacks $f"
done

pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
  if dpkg -s likewise >/dev/null 2>&1; then dpkg --purge likewise >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

step "install"
if dpkg -s likewise >/dev/null 2>&1; then dpkg --purge likewise >/dev/null; fi
install_log=$(mktemp)
dpkg -i "$deb" 2>&1 | tee "$install_log"
if [ ! -d /run/systemd/system ]; then
  grep -q "systemd is not running" "$install_log" || fail "installing without systemd said nothing"
fi
rm -f "$install_log"
test -x /usr/bin/likewise || fail "/usr/bin/likewise missing"
# deb-systemd-helper names /lib/systemd/system in its link; on the merged-/usr systems
# the package supports that is the installed unit itself.
wants=/etc/systemd/system/multi-user.target.wants/likewise.service
[ "$(readlink -f "$wants")" = "$(readlink -f /usr/lib/systemd/system/likewise.service)" ] \
  || fail "the enabled unit is not the installed one: $(readlink -f "$wants")"
man -w likewise-serve >/dev/null 2>&1 || ! command -v man >/dev/null || fail "man likewise-serve not found"
test -f /lib/systemd/system/likewise.service -o -f /usr/lib/systemd/system/likewise.service \
  || fail "unit missing"
test -f /etc/likewise/likewise.toml || fail "config missing"
[ "$(stat -c '%U:%G %a' /etc/likewise/likewise.toml)" = "root:likewise 640" ] \
  || fail "config ownership/mode: $(stat -c '%U:%G %a' /etc/likewise/likewise.toml)"
test -f /etc/likewise/edge.toml || fail "the edge's config missing"
test -f /lib/systemd/system/likewise-edge.service -o -f /usr/lib/systemd/system/likewise-edge.service \
  || fail "the edge's unit missing"
[ "$(stat -c '%U:%G %a' /etc/likewise/edge.toml)" = "root:likewise 640" ] \
  || fail "edge config ownership/mode: $(stat -c '%U:%G %a' /etc/likewise/edge.toml)"
# The edge's unit waits for the operator: enabling it is a choice, not a default.
test ! -e /etc/systemd/system/multi-user.target.wants/likewise-edge.service \
  || fail "the edge's unit was enabled on install"
getent passwd likewise >/dev/null || fail "no likewise user"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd likewise)
[ "$uid" -lt 1000 ] || fail "likewise is not a system user (uid $uid)"
[ "$home" = /var/lib/likewise ] || fail "home is $home"
case "$shell" in */nologin|*/false) ;; *) fail "login shell $shell" ;; esac
[ "$(stat -c %U /var/lib/likewise)" = likewise ] || fail "/var/lib/likewise not owned by likewise"
/usr/bin/likewise --version

step "serve as the likewise user on the packaged config"
log=$(mktemp)
# setpriv execs in place (runuser would stay as a parent and turn SIGTERM into 143).
setpriv --reuid=likewise --regid=likewise --init-groups -- /usr/bin/likewise serve --config /etc/likewise/likewise.toml \
  --http 127.0.0.1:0 --resp 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
addr=$(listening_addr "$log" "$pid" "the server")
curl -fsS "http://$addr/healthz" | grep '"ok"' || fail "/healthz"
echo "healthz ok on $addr"
test -S /var/lib/likewise/control.sock || fail "no control socket"
[ "$(stat -c %a /var/lib/likewise/control.sock)" = 600 ] || fail "control socket mode"

step "an edge as the likewise user on the packaged edge config"
edge_log=$(mktemp)
setpriv --reuid=likewise --regid=likewise --init-groups -- /usr/bin/likewise edge \
  --config /etc/likewise/edge.toml --http 127.0.0.1:0 --primary "http://$addr" >"$edge_log" 2>&1 &
edge_pid=$!
edge_addr=$(listening_addr "$edge_log" "$edge_pid" "the edge")
curl -fsS "http://$edge_addr/healthz" | grep '"edge"' || fail "the edge's /healthz"
curl -fsS "http://$edge_addr/api/openapi.json" >/dev/null || fail "the edge does not forward /api/"
kill -TERM "$edge_pid"
wait "$edge_pid" || { cat "$edge_log"; fail "the edge did not stop cleanly"; }
rm -f "$edge_log"

step "online backup and restore with the installed binary"
backup_dir=$(mktemp -d)
/usr/bin/likewise backup --data /var/lib/likewise --out "$backup_dir/likewise.backup"
/usr/bin/likewise restore --from "$backup_dir/likewise.backup" --data "$backup_dir/restored"
if /usr/bin/likewise restore --from "$backup_dir/likewise.backup" --data /var/lib/likewise --force; then
  fail "restore into the running server's directory was allowed"
fi
rm -rf "$backup_dir"

step "stop"
kill -TERM "$pid"
wait "$pid" || { cat "$log"; fail "the server did not stop cleanly"; }
pid=""
grep -q "stopped" "$log" || { cat "$log"; fail "no graceful stop"; }

step "remove keeps the data, purge deletes it"
dpkg --remove likewise
test -d /var/lib/likewise || fail "remove deleted the data"
test -f /etc/likewise/likewise.toml || fail "remove deleted the conffile"
dpkg --purge likewise
test ! -e /var/lib/likewise || fail "purge left /var/lib/likewise"
test ! -e /etc/likewise/likewise.toml || fail "purge left the conffile"
test ! -e /etc/likewise/edge.toml || fail "purge left the edge's conffile"
test ! -e /usr/bin/likewise || fail "purge left the binary"
rm -f "$log"

step "the .rpm"
rpm -qip "$rpm_file"
rpmlint -c packaging/rpm/rpmlint.toml "$rpm_file" || fail "rpmlint"
rpm_files=$(rpm -qlp "$rpm_file")
echo "$rpm_files"
grep -qx /usr/bin/likewise <<<"$rpm_files" || fail "rpm lacks the binary"
grep -qx /usr/share/man/man1/likewise.1.gz <<<"$rpm_files" || fail "rpm lacks the manual page"
grep -qx /usr/lib/systemd/system/likewise.service <<<"$rpm_files" || fail "rpm lacks the unit"
grep -qx /usr/lib/systemd/system/likewise-edge.service <<<"$rpm_files" || fail "rpm lacks the edge's unit"
rpm -qcp "$rpm_file" | grep -x /etc/likewise/edge.toml || fail "rpm edge config file not marked"
rpm -qcp "$rpm_file" | grep -x /etc/likewise/likewise.toml || fail "rpm config file not marked"
rpm -qp --scripts "$rpm_file" | grep useradd || fail "rpm lacks the user scriptlet"

step "the systemd unit"
if command -v systemd-analyze >/dev/null; then
  # verify checks that ExecStart exists; point a copy at the freshly built binary.
  unit_dir=$(mktemp -d)
  sed "s|/usr/bin/likewise|$PWD/target/release/likewise|" packaging/systemd/likewise.service \
    >"$unit_dir/likewise.service"
  sed "s|/usr/bin/likewise|$PWD/target/release/likewise|" packaging/systemd/likewise-edge.service \
    >"$unit_dir/likewise-edge.service"
  systemd-analyze verify "$unit_dir/likewise.service" "$unit_dir/likewise-edge.service" \
    || fail "systemd-analyze verify"
  echo "systemd-analyze verify: ok"
  systemd-analyze security --offline=yes "$unit_dir/likewise.service" 2>/dev/null | tail -n 1 || true
  rm -rf "$unit_dir"
else
  echo "systemd-analyze not available; skipped"
fi

echo
echo "packages OK"
