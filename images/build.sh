#!/usr/bin/env bash
# Build the platform's images from Debian's package mirror alone (no container registry needed).
#
#   images/build.sh [base|sandbox|transform-example|platform|postgres|all]...    (default: all)
#
#   base               campaign-base:bookworm            debootstrap --variant=minbase + docker import
#   sandbox            campaign-sandbox:latest           images/Dockerfile.sandbox
#   transform-example  campaign-example-rewrite:latest   images/Dockerfile.transform-example
#   platform           campaign-platform:latest          images/Dockerfile.platform
#   postgres           campaign-postgres:15              images/Dockerfile.postgres (not in all:
#                      an offline stand-in for postgres:16 where no registry is reachable)
#
# Idempotent and fast when nothing changed: the base image is made once (delete it, or set
# REBUILD_BASE=1, to make it again); every other image carries the label org.campaign.dockerfile-sha,
# a hash of its Dockerfile, build arguments, build context and parent image, and is rebuilt only
# when that hash changes (FORCE=1 rebuilds anyway). An image's prerequisites are built first.
#
# Environment:
#   DEBIAN_MIRROR          Debian mirror for debootstrap and apt (default: the host's apt sources,
#                          else http://deb.debian.org/debian)
#   DEBIAN_SECURITY_MIRROR security mirror (default: derived from the host's apt sources)
#   CLAUDE_CODE_VERSION    Claude Code CLI version in the sandbox image (default 2.1.197)
#   BUILD_NETWORK          network of `docker build` (default host: this engine has no bridge)
#   EXTRA_CA_CERTS         CA certificates (PEM files, space-separated) that pip and npm need
#                          behind a TLS-inspecting proxy; default: the host's locally added ones
#                          (/usr/local/share/ca-certificates/**/*.crt); "none" for none. Used while
#                          building only, unless TRUST_BUILD_CA=1 keeps them trusted in the images.
#   FORCE=1                rebuild the Dockerfile images even when their hash is unchanged
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
label="org.campaign.dockerfile-sha"

BASE_IMAGE="campaign-base:bookworm"
SANDBOX_IMAGE="campaign-sandbox:latest"
REWRITE_IMAGE="campaign-example-rewrite:latest"
PLATFORM_IMAGE="campaign-platform:latest"
POSTGRES_IMAGE="campaign-postgres:15"
SUITE="bookworm"
CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.197}"
BUILD_NETWORK="${BUILD_NETWORK:-host}"
FORCE="${FORCE:-0}"
TRUST_BUILD_CA="${TRUST_BUILD_CA:-0}"

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'images/build.sh: ERROR: %s\n' "$*" >&2
    exit 1
}

tmp_dirs=()
declare -A visited=() # targets already handled in this invocation (prerequisites are shared)
superseded=() # "name id" of images a rebuild replaced, removed at the end (children first)
cleanup() {
    local dir
    for dir in "${tmp_dirs[@]+"${tmp_dirs[@]}"}"; do
        rm -rf -- "$dir"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# new_tmp VAR: a new temporary directory in VAR, removed on exit. (Not `$(new_tmp)`: a command
# substitution runs in a subshell, which would register the directory in its own copy of tmp_dirs.)
new_tmp() {
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/campaign-image.XXXXXX")"
    tmp_dirs+=("$dir")
    printf -v "$1" '%s' "$dir"
}

# first_visit TARGET: true the first time TARGET is asked for in this invocation.
first_visit() {
    [ -z "${visited[$1]:-}" ] || return 1
    visited[$1]=1
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

image_id() { docker image inspect --format '{{.Id}}' "$1"; }

image_size() { docker image inspect --format '{{.Size}}' "$1" | numfmt --to=iec; }

image_label() {
    docker image inspect --format "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null || true
}

# The first URI of the host's apt sources whose path ends in $1 (/debian or /debian-security).
host_mirror() {
    local suffix="$1" files=() line uri f
    local words=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ "${#files[@]}" -gt 0 ] || return 0
    while IFS= read -r line; do
        read -r -a words <<<"$line"
        for uri in "${words[@]}"; do
            case "$uri" in
                http://*"$suffix" | https://*"$suffix" | http://*"$suffix"/ | https://*"$suffix"/)
                    printf '%s\n' "${uri%/}"
                    return 0
                    ;;
            esac
        done
    done < <(grep -h -E '^[[:space:]]*(deb[[:space:]]|URIs:)' "${files[@]}" 2>/dev/null || true)
}

mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "${DEBIAN_MIRROR%/}"
        return
    fi
    local found
    found="$(host_mirror /debian)"
    printf '%s\n' "${found:-http://deb.debian.org/debian}"
}

security_mirror() {
    if [ -n "${DEBIAN_SECURITY_MIRROR:-}" ]; then
        printf '%s\n' "${DEBIAN_SECURITY_MIRROR%/}"
        return
    fi
    local found
    found="$(host_mirror /debian-security)"
    printf '%s\n' "${found:-$(mirror)-security}"
}

# sha256 over a build: the Dockerfile, every file of the context, extra strings (build args,
# parent image id). Paths are relative so the hash does not depend on the temp dir's name.
content_hash() {
    local context="$1"
    shift
    {
        (cd "$context" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
        printf '%s\n' "$@"
    } | sha256sum | cut -d' ' -f1
}

# Copy the extra CA certificates into CONTEXT/build-ca/ (one .crt per certificate file).
build_ca() {
    local dir="$1/build-ca" crt i=0
    local certs=()
    mkdir -p "$dir"
    : >"$dir/.keep"
    if [ "${EXTRA_CA_CERTS-}" = none ]; then
        return 0
    elif [ -n "${EXTRA_CA_CERTS:-}" ]; then
        read -r -a certs <<<"$EXTRA_CA_CERTS"
    elif [ -d /usr/local/share/ca-certificates ]; then
        while IFS= read -r -d '' crt; do
            certs+=("$crt")
        done < <(find /usr/local/share/ca-certificates -name '*.crt' -type f -print0 | LC_ALL=C sort -z)
    fi
    for crt in "${certs[@]+"${certs[@]}"}"; do
        [ -r "$crt" ] || die "EXTRA_CA_CERTS: cannot read $crt"
        i=$((i + 1))
        cp "$crt" "$dir/extra-$i.crt"
    done
}

# docker_build IMAGE DOCKERFILE CONTEXT PARENT [--build-arg K=V]...
docker_build() {
    local image="$1" dockerfile="$2" context="$3" parent="$4"
    shift 4
    cp "$dockerfile" "$context/Dockerfile"
    local sha
    sha="$(content_hash "$context" "$@" "parent=$(image_id "$parent")")"
    if [ "$FORCE" != 1 ] && image_exists "$image" && [ "$(image_label "$image")" = "$sha" ]; then
        say "$image is up to date ($label=${sha:0:12})"
        return 0
    fi
    say "building $image ($label=${sha:0:12})"
    local start=$SECONDS
    image_exists "$image" && superseded+=("$image $(image_id "$image")")
    docker build --network "$BUILD_NETWORK" --pull=false --force-rm -t "$image" \
        --label "$label=$sha" --build-arg "DOCKERFILE_SHA=$sha" "$@" \
        -f "$context/Dockerfile" "$context"
    say "built $image in $((SECONDS - start)) s ($(image_size "$image"))"
}

build_base() {
    first_visit base || return 0
    if [ "${REBUILD_BASE:-0}" != 1 ] && image_exists "$BASE_IMAGE"; then
        say "$BASE_IMAGE exists (REBUILD_BASE=1 makes it again)"
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "debootstrap needs root to make $BASE_IMAGE (run as root, or docker load a saved copy)"
    if ! command -v debootstrap >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "debootstrap is not installed (Debian: apt-get install debootstrap)"
        say "installing debootstrap (Debian's packages)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
            die "could not install debootstrap (apt-get install debootstrap)"
    fi
    local mirror_url security_url rootfs start=$SECONDS
    mirror_url="$(mirror)"
    security_url="$(security_mirror)"
    new_tmp rootfs
    rootfs="$rootfs/rootfs"
    say "debootstrap --variant=minbase $SUITE from $mirror_url"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror_url" >&2 ||
        die "debootstrap failed (see $rootfs/debootstrap/debootstrap.log if it exists)"

    # What Debian's own container images do: complete sources, no recommends, no docs or caches.
    cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror_url $SUITE main
deb $mirror_url $SUITE-updates main
deb $security_url $SUITE-security main
SOURCES
    cat >"$rootfs/etc/apt/apt.conf.d/90campaign" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90campaign-nodoc" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKG
    find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs/debootstrap"

    image_exists "$BASE_IMAGE" && superseded+=("$BASE_IMAGE $(image_id "$BASE_IMAGE")")
    say "docker import $BASE_IMAGE"
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL org.campaign.debian-mirror=$mirror_url" \
        --message "debootstrap --variant=minbase $SUITE $mirror_url" \
        - "$BASE_IMAGE" >/dev/null
    say "built $BASE_IMAGE in $((SECONDS - start)) s ($(image_size "$BASE_IMAGE"))"
}

build_sandbox() {
    first_visit sandbox || return 0
    build_base
    local context
    new_tmp context
    build_ca "$context"
    docker_build "$SANDBOX_IMAGE" "$here/Dockerfile.sandbox" "$context" "$BASE_IMAGE" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "CLAUDE_CODE_VERSION=$CLAUDE_CODE_VERSION" \
        --build-arg "TRUST_BUILD_CA=$TRUST_BUILD_CA"
}

build_transform_example() {
    first_visit transform-example || return 0
    build_sandbox
    local context
    new_tmp context
    cp "$here/transform-example/rewrite.py" "$context/rewrite.py"
    docker_build "$REWRITE_IMAGE" "$here/Dockerfile.transform-example" "$context" "$SANDBOX_IMAGE" \
        --build-arg "SANDBOX_IMAGE=$SANDBOX_IMAGE"
}

# The platform's build context: only what the image needs, as git would commit it (tracked and
# untracked-but-not-ignored files), so caches, venvs and local data never reach the image.
platform_context() {
    local context="$1" path
    local wanted=(pyproject.toml workspace.yaml dagster.yaml orchestrator_assets resources sensors
        campaigns deploy/docker/dagster.yaml deploy/docker/workspace.yaml)
    if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        while IFS= read -r -d '' path; do
            [ -f "$root/$path" ] || continue
            mkdir -p "$context/$(dirname "$path")"
            cp "$root/$path" "$context/$path"
        done < <(git -C "$root" ls-files -z --cached --others --exclude-standard -- "${wanted[@]}")
    else
        (cd "$root" && find "${wanted[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0) |
            while IFS= read -r -d '' path; do
                mkdir -p "$context/$(dirname "$path")"
                cp "$root/$path" "$context/$path"
            done
    fi
    [ -f "$context/pyproject.toml" ] || die "no pyproject.toml in $root"
}

build_platform() {
    first_visit platform || return 0
    build_base
    local context
    new_tmp context
    platform_context "$context"
    build_ca "$context"
    docker_build "$PLATFORM_IMAGE" "$here/Dockerfile.platform" "$context" "$BASE_IMAGE" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "TRUST_BUILD_CA=$TRUST_BUILD_CA"
}

build_postgres() {
    first_visit postgres || return 0
    build_base
    local context
    new_tmp context
    cp "$here/postgres/entrypoint.sh" "$context/entrypoint.sh"
    docker_build "$POSTGRES_IMAGE" "$here/Dockerfile.postgres" "$context" "$BASE_IMAGE" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE"
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

main() {
    case "${1:-}" in
        -h | --help)
            usage
            return 0
            ;;
    esac
    command -v docker >/dev/null 2>&1 || die "docker is not installed (make docker-engine)"
    docker info >/dev/null 2>&1 || die "the Docker engine is not answering (make docker-engine)"
    # One build at a time per user (make images and the tests may overlap).
    if command -v flock >/dev/null 2>&1; then
        exec 9>"${TMPDIR:-/tmp}/campaign-images-$(id -u).lock"
        flock 9
    fi
    [ "$#" -gt 0 ] || set -- all
    local target
    for target in "$@"; do
        case "$target" in
            base) build_base ;;
            sandbox) build_sandbox ;;
            transform-example) build_transform_example ;;
            platform) build_platform ;;
            postgres) build_postgres ;;
            all)
                build_transform_example
                build_platform
                ;;
            *) die "unknown image '$target' (base, sandbox, transform-example, platform, postgres, all)" ;;
        esac
    done
    # Old versions of rebuilt images, newest first so children go before their parents; one that
    # a container still uses stays.
    local i name id
    for ((i = ${#superseded[@]} - 1; i >= 0; i--)); do
        read -r name id <<<"${superseded[i]}"
        if [ "$(image_id "$name" 2>/dev/null || true)" != "$id" ]; then
            docker image rm "$id" >/dev/null 2>&1 || true
        fi
    done
    docker image ls --filter 'reference=campaign-*' >&2
}

main "$@"
