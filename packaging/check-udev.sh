#!/usr/bin/env bash
# Check udev/70-modemgate.rules:
#   - it sorts before ModemManager's rules (77-80), or ID_MM_DEVICE_IGNORE comes too late;
#   - every supported modem's USB id is in both blocks (USB device, and its ports);
#   - udev parses it cleanly: `udevadm verify` where it exists (systemd >= 254), and always a dry run with
#     `udevadm test` on a tty this machine has, failing on any message udev prints about the file.
# Installs udev (Debian) if udevadm is missing. The dry run copies the rules into /run/udev/rules.d for its
# duration (udevadm test reads only the system rule directories) and removes them on exit.
# What needs a real modem (links, ModemManager ignoring it, autosuspend) is the manual procedure at the top
# of the rules file.
set -euo pipefail
cd "$(dirname "$0")/.."

rules=udev/70-modemgate.rules
name=$(basename "$rules")

if ! command -v udevadm >/dev/null; then
    echo "== installing udev (for udevadm)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq udev >/dev/null
fi

echo "== ordering"
number=${name%%-*}
if [ "$number" -ge 77 ]; then
    echo "FAIL: $name runs after ModemManager's 77-80 rules" >&2
    exit 1
fi
echo "$name runs before ModemManager (77-80)"

echo "== supported modems"
# USB vendor:product of the modems in ENGINEERING.md's table.
for id in 2c7c:0125 1e0e:9001 1e0e:9011 1bc7:1201 1199:9071 12d1:1506; do
    vendor=${id%:*} product=${id#*:}
    device=$(grep -c "ATTR{idVendor}==\"$vendor\", ATTR{idProduct}==\"$product\"" "$rules" || true)
    port=$(grep -c "ATTRS{idVendor}==\"$vendor\", ATTRS{idProduct}==\"$product\"" "$rules" || true)
    if [ "$device" != 1 ] || [ "$port" != 1 ]; then
        echo "FAIL: $id is not matched exactly once as a USB device and once for its ports" >&2
        exit 1
    fi
done
echo "all 6 USB ids present"

if udevadm verify --help >/dev/null 2>&1; then
    echo "== udevadm verify"
    udevadm verify "$rules"
fi

echo "== udevadm test (dry run)"
installed=/run/udev/rules.d/$name
if [ -e "$installed" ]; then
    echo "FAIL: $installed exists already; not overwriting it" >&2
    exit 1
fi
mkdir -p /run/udev/rules.d
cp "$rules" "$installed"
trap 'rm -f "$installed"' EXIT
tty=$(ls -d /sys/class/tty/* | head -n 1)
log=$(udevadm test "$tty" 2>&1) || {
    echo "$log" | tail -n 20
    echo "FAIL: udevadm test $tty failed" >&2
    exit 1
}
if ! echo "$log" | grep -q "Reading rules file: $installed"; then
    echo "FAIL: udevadm did not read $installed" >&2
    exit 1
fi
problems=$(echo "$log" | grep -F "$installed:" || true)
if [ -n "$problems" ]; then
    echo "$problems"
    echo "FAIL: udev reported problems in $rules" >&2
    exit 1
fi
echo "parsed cleanly (udevadm test $tty)"
echo "check-udev: ok"
