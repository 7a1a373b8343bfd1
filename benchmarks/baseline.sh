#!/usr/bin/env bash
# The bare baseline: per repository clone, codemod, verifier, commit, push — no orchestration,
# with the same parallelism as the platform. Usage: baseline.sh PARALLELISM CODEMOD VERIFIER < repos
set -u
P=$1; export CODEMOD=$2; export VERIFIER=$3
work() {
  repo=$1
  d=$(mktemp -d)
  git clone -q "$repo" "$d/w" || { rm -rf "$d"; return 0; }
  cd "$d/w" || return 0
  git checkout -q -b campaign/baseline
  # shellcheck disable=SC2086
  $CODEMOD >/dev/null 2>&1
  if $VERIFIER >/dev/null 2>&1 && [ -n "$(git status --porcelain)" ]; then
    git add -A
    git -c user.name=b -c user.email=b@b commit -qm "baseline change"
    git push -q origin campaign/baseline
  fi
  cd / && rm -rf "$d"
}
export -f work
xargs -P "$P" -I{} bash -c 'work "$@"' _ {}
