#!/usr/bin/env bash
# Headless Chromium from Debian's package, for the tracker's real-browser test:
# `chromium.sh install|status`. Idempotent: does nothing when a Chromium is on PATH.
source "$(dirname "$0")/lib.sh"

find_chromium() {
  command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null || true
}

install() {
  [ -n "$(find_chromium)" ] && return 0
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  info "installing Debian's chromium package"
  $sudo apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null \
    || die "could not install chromium with apt-get (needs root or sudo, and Debian's package index)"
  [ -n "$(find_chromium)" ] || die "chromium is not on PATH after installing it"
  info "chromium installed: $(find_chromium)"
}

case "${1:-}" in
  install) install ;;
  status) if [ -n "$(find_chromium)" ]; then echo "chromium: $(find_chromium)"; else echo "chromium missing"; exit 3; fi ;;
  *) echo "usage: $0 install|status" >&2; exit 2 ;;
esac
