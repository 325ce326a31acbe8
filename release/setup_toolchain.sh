#!/bin/sh
# Install the Debian packages the pipeline and its tests need, only when missing.
# Idempotent: prints one line and installs nothing when everything is there.
set -eu

PACKAGES="rustc cargo libstd-rust-dev-windows gcc-mingw-w64-x86-64 minisign wine64 git systemd chromium softhsm2 bubblewrap reprotest diffoscope disorderfs faketime osslsigncode gpg gpgv sqv signify-openbsd nodejs unzip"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "toolchain: all Debian packages present"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "toolchain: missing Debian packages:$missing" >&2
    echo "  hint: as root, run: apt-get install$missing" >&2
    exit 3
fi

echo "toolchain: installing Debian packages:$missing"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
