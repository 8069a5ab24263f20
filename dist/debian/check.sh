#!/usr/bin/env bash
# Builds the .deb from the release build (cargo deb) and checks it: what it
# installs (dpkg-deb -c), its conffile and maintainer scripts, and that the
# binary it holds runs once unpacked into a scratch root (dpkg -x).
set -euo pipefail
cd "$(dirname "$0")/../.."

deb=$(cargo deb --no-build --strip --locked 2>&1 | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb made no package: $deb"; exit 1; }
echo "package: $deb"

contents=$(dpkg-deb -c "$deb")
echo "$contents"
for path in ./usr/bin/petrel ./etc/petrel/petrel.toml \
    ./usr/share/doc/petrel/petrel.toml.example ./usr/share/doc/petrel/operations.md; do
    grep -q " $path\$" <<<"$contents" || { echo "missing from the package: $path"; exit 1; }
done
grep -Eq " \./(usr/)?lib/systemd/system/petrel\.service\$" <<<"$contents" ||
    { echo "missing from the package: the systemd unit"; exit 1; }

control=$(mktemp -d)
scratch=$(mktemp -d)
trap 'rm -rf "$control" "$scratch"' EXIT
dpkg-deb -e "$deb" "$control"
grep -qx /etc/petrel/petrel.toml "$control/conffiles" ||
    { echo "/etc/petrel/petrel.toml is not a conffile"; exit 1; }
grep -q "adduser --system" "$control/postinst" || { echo "postinst makes no petrel user"; exit 1; }
grep -q "systemctl" "$control/postinst" || { echo "postinst does not enable the unit"; exit 1; }
grep -q "^Depends:.*adduser" "$control/control" || { echo "no dependency on adduser"; exit 1; }

dpkg -x "$deb" "$scratch"
"$scratch/usr/bin/petrel" --version
"$scratch/usr/bin/petrel" check-config "$scratch/etc/petrel/petrel.toml"
echo "the package is complete"
