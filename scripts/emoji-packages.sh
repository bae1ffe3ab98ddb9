#!/usr/bin/env bash
# The Debian packages the `emoji` data set is built from (docs/data.md), installed where missing:
# needs root and apt-get, otherwise it prints the command to run and fails. The same list is
# PACKAGES in plugins/emoji_sources.py (tests/test_emoji.py checks that they agree).
set -euo pipefail
packages=(fonts-noto-color-emoji fonts-symbola ruby-gemojione unicode-cldr-core libfribidi0)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
[ ${#missing[@]} = 0 ] && exit 0
command="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "emoji-packages: needs root and apt-get; run: $command" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
$command -qq >/dev/null
