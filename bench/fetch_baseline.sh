#!/usr/bin/env bash
# The stock-tool equivalent of the customer's fetch (release/fetch.py): download
# one product's archive, its minisign signature, SHA256SUMS and its signature
# from the mirror, check both signatures with minisign and the archive with
# sha256sum, one command after another.
#
#   fetch_baseline.sh TARGETS OUT PUBKEY ARCHIVE
#
# TARGETS is the mirror's folder of the release's files (the TUF repository's
# targets/VERSION/, where each file is stored as <sha256>.NAME); OUT a new
# folder; PUBKEY the release's minisign public key.
set -euo pipefail

targets=$1 out=$2 key=$3 archive=$4
mkdir "$out"
for name in "$archive" "$archive.minisig" SHA256SUMS SHA256SUMS.minisig; do
    found=("$targets"/*."$name")
    cp -- "${found[0]}" "$out/$name"
done
cd "$out"
minisign -V -q -p "$key" -m SHA256SUMS
minisign -V -q -p "$key" -m "$archive"
sha256sum --quiet --ignore-missing -c SHA256SUMS
