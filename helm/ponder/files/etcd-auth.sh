#!/bin/sh
# Turns on authentication in the bundled etcd and keeps it on (docs/security.md, "Helm").
#
# It runs as the "auth" container of every etcd member's pod and talks to that member
# over loopback through etcd's JSON gateway (the etcd image has no shell; this image has
# sh and curl). It makes:
#   - the user root (role root) with the password ETCD_ROOT_PASSWORD;
#   - the role ponder: read and write the key range [PREFIX_KEY, PREFIX_RANGE_END);
#   - the user PONDER_ETCD_USER (role ponder) with the password PONDER_ETCD_PASSWORD;
# then turns authentication on. Every step can be repeated, so restarts and several
# members doing it at once are fine. It is ready only while authentication is on and
# both users log in: until then the etcd pod stays out of the client Service that the
# Ponder pods dial, so they never see an open etcd. Once ready it checks again every
# CHECK_EVERY seconds.
#
# Environment: ETCD_ENDPOINT (http://127.0.0.1:2379), ETCD_ROOT_PASSWORD,
# PONDER_ETCD_USER, PONDER_ETCD_PASSWORD, PREFIX_KEY and PREFIX_RANGE_END (base64),
# READY_FILE, CHECK_EVERY (default 60), ONCE (1: one attempt, exit 0 on success; tests).
# Passwords and tokens never go on a command line (ps) or into the log.
set -u
umask 077

ep=${ETCD_ENDPOINT:?}
root_pw=${ETCD_ROOT_PASSWORD:?}
user=${PONDER_ETCD_USER:?}
user_pw=${PONDER_ETCD_PASSWORD:?}
key=${PREFIX_KEY:?}
range_end=${PREFIX_RANGE_END:?}
ready=${READY_FILE:-/tmp/etcd-auth-ready}
every=${CHECK_EVERY:-60}
once=${ONCE:-0}
work=$(mktemp -d) || exit 1
last=""
out=""
token=""

trap 'rm -rf "$work"; exit 0' TERM INT

# log MESSAGE: to stderr, once per change (a failing check every 2 s logs one line).
log() {
    if [ "$1" != "$last" ]; then
        printf '%s etcd-auth: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" >&2
        last=$1
    fi
}

# esc STRING: escaped for a JSON string.
esc() {
    printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'
}

# call PATH JSON [TOKEN]: POST JSON to the gateway's /v3/PATH. The response (or curl's
# error) is left in $out; the status is 0 for HTTP 200. The body and the token header
# go through files, not arguments.
call() {
    path=$1
    printf '%s' "$2" >"$work/body"
    if [ -n "${3:-}" ]; then
        printf 'Authorization: %s\n' "$3" >"$work/header"
    else
        : >"$work/header"
    fi
    # curl's arguments are the path and file names, never a secret.
    code=$(curl -sS --max-time 10 -o "$work/out" -w '%{http_code}' \
        -H 'Content-Type: application/json' -H "@$work/header" \
        --data-binary "@$work/body" "$ep/v3/$path" 2>"$work/err") || code=000
    if [ "$code" = 000 ]; then
        out=$(cat "$work/err")
    else
        out=$(cat "$work/out")
    fi
    rm -f "$work/body" "$work/header" "$work/out" "$work/err"
    [ "$code" = 200 ]
}

# may PATH JSON [TOKEN]: call, where "already exists" counts as done.
may() {
    call "$@" && return 0
    case $out in
    *"already exists"*) return 0 ;;
    esac
    return 1
}

# login NAME PASSWORD: a token in $token.
login() {
    token=""
    call auth/authenticate "{\"name\":\"$(esc "$1")\",\"password\":\"$(esc "$2")\"}" || return 1
    token=$(printf '%s' "$out" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
    [ -n "$token" ]
}

# setup [TOKEN]: the users and the role (TOKEN: root's, once authentication is on).
setup() {
    t=${1:-}
    u=$(esc "$user")
    may auth/user/add "{\"name\":\"root\",\"password\":\"$(esc "$root_pw")\"}" "$t" || return 1
    if [ -z "$t" ]; then
        # Authentication is off: root may exist from an earlier attempt with another password.
        call auth/user/changepw "{\"name\":\"root\",\"password\":\"$(esc "$root_pw")\"}" || return 1
    fi
    call auth/user/grant "{\"user\":\"root\",\"role\":\"root\"}" "$t" || return 1
    may auth/role/add '{"name":"ponder"}' "$t" || return 1
    call auth/role/grant "{\"name\":\"ponder\",\"perm\":{\"permType\":\"READWRITE\",\"key\":\"$key\",\"range_end\":\"$range_end\"}}" "$t" || return 1
    may auth/user/add "{\"name\":\"$u\",\"password\":\"$(esc "$user_pw")\"}" "$t" || return 1
    call auth/user/changepw "{\"name\":\"$u\",\"password\":\"$(esc "$user_pw")\"}" "$t" || return 1
    call auth/user/grant "{\"user\":\"$u\",\"role\":\"ponder\"}" "$t"
}

# ensure: authentication is on and both users log in (setting them up when needed).
ensure() {
    if login root "$root_pw"; then
        root_token=$token
        login "$user" "$user_pw" && return 0
        log "authentication is on but $user cannot log in ($out); setting the user up again"
        if setup "$root_token" && login "$user" "$user_pw"; then
            return 0
        fi
        log "could not set up $user: $out"
        return 1
    fi
    case $out in
    *"not enabled"*) ;;
    *"authentication failed"*)
        log "etcd refuses the root password from the Secret: its data was set up with another one (was the Secret deleted while the etcd volumes were kept?). Restore the Secret, or delete the etcd PersistentVolumeClaims to start empty"
        return 1
        ;;
    *)
        log "waiting for etcd: $out"
        return 1
        ;;
    esac
    log "authentication is off: adding root, the role ponder and the user $user, then turning it on"
    setup "" || {
        log "setting up the users failed: $out"
        return 1
    }
    call auth/enable '{}' || {
        log "turning authentication on failed: $out"
        return 1
    }
    if login root "$root_pw" && login "$user" "$user_pw"; then
        return 0
    fi
    log "authentication is on but a login fails: $out"
    return 1
}

while :; do
    if ensure; then
        log "authentication is on; $user may read and write its prefix"
        : >"$ready"
        [ "$once" = 1 ] && exit 0
        sleep "$every" &
    else
        rm -f "$ready"
        [ "$once" = 1 ] && exit 1
        sleep 2 &
    fi
    wait $!
done
