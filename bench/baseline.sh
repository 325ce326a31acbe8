#!/usr/bin/env bash
# The stock-tool baseline: the release work done by hand, one command after
# another, as a person would type it.
#
#   baseline.sh TREES OUT EPOCH SECKEY FORMAT:STEM...
#
# For each FORMAT:STEM (tar.gz or zip), archives TREES/STEM into OUT:
#   tar.gz  deterministic tar (sorted, owner 0/0, mtime EPOCH) piped to gzip -n -6
#   zip     zip -X -6 -r
# then signs every archive with minisign -S (SECKEY: an unencrypted minisign
# key, made with minisign -G -W), writes SHA256SUMS over the archives and
# signatures with sha256sum, and signs SHA256SUMS. Level 6 matches
# release/archive.py (GZIP_LEVEL, ZIP_LEVEL).
set -euo pipefail
shopt -s nullglob

trees=$1 out=$2 epoch=$3 key=$4
shift 4
mkdir -p "$out"
out=$(cd "$out" && pwd)

for spec in "$@"; do
    fmt=${spec%%:*}
    stem=${spec#*:}
    case $fmt in
        tar.gz)
            tar -C "$trees" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -cf - "$stem" \
                | gzip -n -6 >"$out/$stem.tar.gz"
            ;;
        zip)
            (cd "$trees" && zip -X -6 -r -q "$out/$stem.zip" "$stem")
            ;;
        *)
            echo "baseline.sh: unknown format $fmt" >&2
            exit 2
            ;;
    esac
done

cd "$out"
for f in *.tar.gz *.zip; do
    minisign -S -s "$key" -m "$f" -t "file:$f" >/dev/null
done
sha256sum -- *.tar.gz *.zip *.minisig >SHA256SUMS
minisign -S -s "$key" -m SHA256SUMS -t "file:SHA256SUMS" >/dev/null
