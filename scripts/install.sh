#!/usr/bin/env bash
# Install Proximity system-wide on a Proxmox VE host, or remove it again (--uninstall).
#
# The install: the Debian packages Proximity runs, a virtual environment under PREFIX with the
# pinned, hashed dependencies of requirements.lock (never the system Python: PEP 668), the
# `proximity` command in BIN_DIR, the proximity-api systemd unit and the API token.
# The uninstall: the API service stopped (it would heal the network), `proximity down`, the units
# disabled and removed, then every file the install and Proximity made. Both take --dry-run. Run with --help for the options.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
me=install.sh

usage() {
    cat <<EOF
Usage: scripts/install.sh [--uninstall] [OPTIONS]

Install Proximity into a virtual environment (default /opt/proximity) with the command
/usr/local/bin/proximity, the proximity-api systemd unit and its token. --uninstall stops the
API service, runs \`proximity down\`, then removes the units and every file of Proximity.

  --uninstall          remove Proximity instead of installing it
  --dry-run            print what would be done; change nothing
  --keep-network       with --uninstall: skip \`proximity down\`; prox-net, its dnsmasq unit
                       and the files they run from stay (only the program, the API unit and the
                       token go)
  --keep-config        with --uninstall: keep ETC_DIR/proximity.toml
  --no-apt             do not install Debian packages (say which are missing instead)
  --root DIR           a staging root: write every file below under DIR, while the units,
                       the wrapper and the virtual environment name the final paths (without
                       DIR), so the tree works once copied to /; nothing runs from it and no
                       token is made (each host makes its own: \`proximity token create\`)
  --prefix DIR         the virtual environment               (default /opt/proximity)
  --bin-dir DIR        where the \`proximity\` command goes    (default /usr/local/bin)
  --systemd-dir DIR    where the units go                    (default /etc/systemd/system)
  --etc-dir DIR        settings, dnsmasq.conf, the API token (default /etc/proximity)
  --state-dir DIR      leases, backups, the lock             (default /var/lib/proximity)
  --run-dir DIR        pid files                             (default /run/proximity)
  --api-host ADDR      the API listens here                  (default 127.0.0.1)
  --api-port PORT      and on this port                      (default 8080)

--uninstall removes PREFIX, BIN_DIR/proximity, SYSTEMD_DIR/proximity-api.service and
proximity-dns.service, ETC_DIR (settings, dnsmasq.conf, the API token), STATE_DIR (leases,
reservations, the lock) and RUN_DIR. It keeps STATE_DIR/backups, the copies of the interfaces
file Proximity made before each change. The Debian packages stay.

The uninstall reads the paths the install recorded in PREFIX/install.env; options given
on its command line win.
EOF
}

die() { echo "$me: $*" >&2; exit 2; }
say() { echo "$me: $*"; }

# -- options -------------------------------------------------------------------------------
action=install dry_run="" keep_network="" keep_config="" apt=1 root=""
declare -A opt=()
while [ $# -gt 0 ]; do
    case $1 in
        --uninstall) action=uninstall ;;
        --dry-run) dry_run=1 ;;
        --keep-network) keep_network=1 ;;
        --keep-config) keep_config=1 ;;
        --no-apt) apt="" ;;
        -h | --help) usage; exit 0 ;;
        --root | --prefix | --bin-dir | --systemd-dir | --etc-dir | --state-dir | --run-dir | --api-host | --api-port)
            [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"
            if [ "$1" = --root ]; then root=$2; else opt[${1#--}]=$2; fi
            shift ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
if [ -n "$root" ]; then
    case $root in /*) ;; *) die "--root must be an absolute path, not '$root'" ;; esac
    root=${root%/}
fi

defaults() {  # the final paths of a default install (with --root, the files go under it)
    : "${opt[prefix]:=/opt/proximity}" "${opt[bin-dir]:=/usr/local/bin}"
    : "${opt[systemd-dir]:=/etc/systemd/system}" "${opt[etc-dir]:=/etc/proximity}"
    : "${opt[state-dir]:=/var/lib/proximity}" "${opt[run-dir]:=/run/proximity}"
    : "${opt[api-host]:=127.0.0.1}" "${opt[api-port]:=8080}"
}
: "${opt[prefix]:=/opt/proximity}"
record=$root${opt[prefix]%/}/install.env
if [ "$action" = uninstall ] && [ -f "$record" ]; then
    # KEY=VALUE lines written by the install below; read as data, never sourced.
    while IFS='=' read -r key value; do
        case $key in prefix | bin-dir | systemd-dir | etc-dir | state-dir | run-dir | api-host | api-port)
            [ -n "${opt[$key]:-}" ] || opt[$key]=$value ;;
        esac
    done <"$record"
fi
defaults
for key in prefix bin-dir systemd-dir etc-dir state-dir run-dir; do
    case ${opt[$key]} in /?*) ;; *) die "--$key must be an absolute path, not '${opt[$key]}'" ;; esac
    opt[$key]=${opt[$key]%/}
done
[[ ${opt[api-port]} =~ ^[0-9]+$ ]] && [ "${opt[api-port]}" -ge 1 ] && [ "${opt[api-port]}" -le 65535 ] ||
    die "--api-port must be a port number from 1 to 65535, not '${opt[api-port]}'"
# The final paths (what units and the wrapper name); under --root every file goes to $root$path.
final_prefix=${opt[prefix]} final_command=${opt[bin-dir]}/proximity
final_etc_dir=${opt[etc-dir]} final_state_dir=${opt[state-dir]} final_run_dir=${opt[run-dir]}
final_systemd_dir=${opt[systemd-dir]}
prefix=$root${opt[prefix]} bin_dir=$root${opt[bin-dir]} systemd_dir=$root${opt[systemd-dir]}
etc_dir=$root${opt[etc-dir]} state_dir=$root${opt[state-dir]} run_dir=$root${opt[run-dir]}
command=$bin_dir/proximity
api_unit=$systemd_dir/proximity-api.service
dns_unit=$systemd_dir/proximity-dns.service
marker="# Installed by Proximity's scripts/install.sh; removed by scripts/install.sh --uninstall."

# systemctl only where it acts on these units: systemd is PID 1 and the units are in its search path.
use_systemctl=""
if [ -z "$root" ] && [ -d /run/systemd/system ] && [ "$systemd_dir" = /etc/systemd/system ]; then
    use_systemctl=1
fi

run() {  # a command that changes the host: printed, and run unless --dry-run
    if [ -n "$dry_run" ]; then echo "would run: $*"; else echo "+ $*"; "$@"; fi
}

remove() {  # a file or directory of Proximity's: removed, and said so
    [ -e "$1" ] || [ -L "$1" ] || return 0
    if [ -n "$dry_run" ]; then echo "would remove: $1"; else rm -rf -- "$1"; echo "removed: $1"; fi
}

own_dir() {  # refuse to delete a directory that is not plainly Proximity's (a wrong --etc-dir=/etc)
    case $(basename "$1") in *proximity*) ;; *) die "refusing to remove $1: its name does not say proximity" ;; esac
}

# The settings the installed command must use when the install is not at the default paths
# (stronger than proximity.toml: only set for such installs).
environment() {
    local -a env=()
    if [ "${1:-}" = here ]; then  # for running the program here, during the install: the staged paths
        local final_etc_dir=$etc_dir final_state_dir=$state_dir final_run_dir=$run_dir final_systemd_dir=$systemd_dir
    fi
    [ "$final_etc_dir" = /etc/proximity ] ||
        env+=("PROXIMITY_CONFIG=$final_etc_dir/proximity.toml" "PROXIMITY_DNSMASQ_CONF=$final_etc_dir/dnsmasq.conf")
    [ "$final_state_dir" = /var/lib/proximity ] ||
        env+=("PROXIMITY_STATE_DIR=$final_state_dir" "PROXIMITY_LEASES_FILE=$final_state_dir/dnsmasq.leases")
    [ "$final_run_dir" = /run/proximity ] || env+=("PROXIMITY_RUN_DIR=$final_run_dir")
    [ "$final_systemd_dir" = /etc/systemd/system ] || env+=("PROXIMITY_SYSTEMD_DIR=$final_systemd_dir")
    [ ${#env[@]} -eq 0 ] || printf '%s\n' "${env[@]}"
}

# -- install -------------------------------------------------------------------------------
# What Proximity runs on a host: the bridge (iproute2, ifupdown2), DHCP and DNS (dnsmasq), the firewall
# (nftables; iptables for Docker's FORWARD drop), and Python for its virtual environment. Proxmox's own
# lxc-pve is left alone.
packages=(iproute2 ifupdown2 bridge-utils dnsmasq-base dnsmasq-utils nftables iptables python3 python3-venv)

install_packages() {
    local missing=() pkg
    for pkg in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "Debian packages: all there (${packages[*]})"
    elif [ -z "$apt" ]; then
        die "missing Debian packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or drop --no-apt"
    else
        [ -n "$dry_run" ] || [ "$(id -u)" = 0 ] || die "run as root to install the Debian packages ${missing[*]}"
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

install_venv() {
    local python=${PYTHON:-python3}
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "Proximity needs Python 3.11 or newer; $("$python" --version 2>&1) found"
    if [ -e "$prefix" ] && [ ! -f "$record" ]; then
        die "$prefix exists and is not a Proximity install (no $record): pick another --prefix or remove it"
    fi
    [ -x "$prefix/bin/python" ] || run "$python" -m venv "$prefix"
    # Exactly the tested versions, each checked against its hash; then Proximity itself, alone.
    run "$prefix/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$repo/requirements.lock"
    run "$prefix/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall --no-build-isolation "$repo"
    run "$prefix/bin/pip" check --disable-pip-version-check ||
        die "requirements.lock does not cover pyproject.toml's dependencies: run make lock, then install again"
    if [ -n "$root" ] && [ -z "$dry_run" ]; then
        # A staging root: the scripts pip wrote name the staging path; make them name the final one.
        grep -lsIF "$prefix" "$prefix"/bin/* "$prefix/pyvenv.cfg" | while IFS= read -r script; do
            sed -i "s|$prefix|$final_prefix|g" "$script"
        done
        say "staged $prefix: its scripts name $final_prefix"
    fi
    if [ -n "$dry_run" ]; then
        echo "would write: $record"
    else
        {
            echo "$marker"
            for key in prefix bin-dir systemd-dir etc-dir state-dir run-dir api-host api-port; do
                echo "$key=${opt[$key]}"
            done
        } >"$record"
    fi
}

install_command() {
    local env_lines
    env_lines=$(environment)
    if [ -n "$dry_run" ]; then
        echo "would write: $command (runs $final_prefix/bin/proximity${env_lines:+ with $(echo "$env_lines" | tr '\n' ' ')})"
        return
    fi
    [ ! -e "$command" ] || grep -qF "$marker" "$command" ||
        die "$command exists and is not Proximity's: remove it or pick another --bin-dir"
    mkdir -p "$bin_dir"
    {
        echo "#!/bin/sh"
        echo "$marker"
        if [ -n "$env_lines" ]; then
            printf 'export'; while IFS= read -r line; do printf ' %q' "$line"; done <<<"$env_lines"; echo
        fi
        printf 'exec %q "$@"\n' "$final_prefix/bin/proximity"
    } >"$command.tmp"
    chmod 0755 "$command.tmp"
    mv -f "$command.tmp" "$command"
    say "installed $command"
}

install_api_unit() {
    # The unit's text comes from Proximity itself (render.api_unit), as `serve --install-unit` writes it.
    if [ -n "$dry_run" ]; then
        echo "would write: $api_unit (ExecStart=$final_command serve --host ${opt[api-host]} --port ${opt[api-port]})"
        [ -n "$root" ] || echo "would run: $command token create   (creates $etc_dir/api-token, mode 0600, unless it exists)"
    else
        mkdir -p "$systemd_dir"
        (
            while IFS= read -r line; do [ -z "$line" ] || export "${line?}"; done <<<"$(environment)"  # the unit names the final paths
            "$prefix/bin/python" -c 'import sys
from proximity.network import render
from proximity.settings import load_settings
sys.stdout.write(render.api_unit(load_settings(), sys.argv[1], sys.argv[2], int(sys.argv[3])))' \
                "$final_command" "${opt[api-host]}" "${opt[api-port]}"
        ) >"$api_unit.tmp"
        mv -f "$api_unit.tmp" "$api_unit"
        say "installed $api_unit"
        if [ -n "$root" ]; then
            say "no API token in the staging root: each host makes its own with \`proximity token create\`"
        elif "$command" token create >/dev/null && [ -f "$etc_dir/api-token" ]; then
            say "the API token is in $etc_dir/api-token (mode $(stat -c %a "$etc_dir/api-token")): \`proximity token show\`"
        else
            say "the API token is made (where dnsmasq_conf's directory is): \`proximity token show\`"
        fi
    fi
    if [ -n "$use_systemctl" ]; then
        run systemctl daemon-reload
        run systemctl enable --now proximity-api.service
        return
    fi
    if [ -d /run/systemd/system ]; then
        say "skipping systemctl: $systemd_dir is not systemd's /etc/systemd/system"
    else
        say "skipping systemctl: systemd is not PID 1 here; on a host with systemd run: systemctl enable --now proximity-api.service"
    fi
    if [ -n "$dry_run" ]; then
        return
    elif command -v systemd-analyze >/dev/null; then
        # Under --root the unit names the final command: checked as a copy that names the staged one.
        if [ -n "$root" ]; then
            local check
            check=$(mktemp -d)
            sed "s|$final_command|$command|g" "$api_unit" >"$check/proximity-api.service"
            run systemd-analyze verify "$check/proximity-api.service" || { rm -rf "$check"; exit 1; }
            rm -rf "$check"
        else
            run systemd-analyze verify "$api_unit"
        fi
    else
        say "not checking $api_unit: systemd-analyze is not installed"
    fi
}

# -- uninstall -----------------------------------------------------------------------------
network_down() {
    if [ -n "$keep_network" ]; then
        say "--keep-network: not running \`proximity down\`; prox-net, the proximity-dns unit, $etc_dir and $state_dir stay"
        return
    fi
    if [ ! -x "$prefix/bin/python" ]; then
        say "no $prefix/bin/python: nothing to take down"
        return
    fi
    # The program where it is now (under --root its scripts name the final paths), on the files here.
    proximity_here() {
        (while IFS= read -r line; do [ -z "$line" ] || export "${line?}"; done <<<"$(environment here)"
         exec "$prefix/bin/python" -m proximity "$@")
    }
    # down: prox-net's stanza out of the interfaces file, the bridge, its NAT and firewall
    # rules, dnsmasq and the proximity-dns unit. If it fails, keep everything: the program
    # that can undo the network must stay. --force: an uninstall means it, containers still on
    # prox-net included (`down` names them).
    say "proximity down: removing prox-net, its NAT and firewall rules, dnsmasq and the proximity-dns unit"
    if [ -n "$dry_run" ]; then
        proximity_here down --force --dry-run || die "\`proximity down --dry-run\` failed; nothing was removed"
    else
        proximity_here down --force || die "\`proximity down\` failed; nothing was removed. Fix what it says, or pass --keep-network"
    fi
}

remove_state() {  # STATE_DIR, but the backups of the interfaces file: the admin's way back
    [ -d "$state_dir" ] || return 0
    if [ ! -d "$state_dir/backups" ]; then remove "$state_dir"; return; fi
    for path in "$state_dir"/* "$state_dir"/.[!.]*; do
        [ "$path" = "$state_dir/backups" ] || remove "$path"
    done
    say "kept $state_dir/backups (copies of the interfaces file made before each change)"
}

uninstall() {
    [ -f "$record" ] || [ -e "$command" ] || [ -e "$api_unit" ] ||
        say "no Proximity install found at $prefix (pass the --prefix and paths it was installed with)"
    if [ -z "$keep_network" ]; then
        own_dir "$etc_dir"; own_dir "$state_dir"; own_dir "$run_dir"
        if [ -n "$(ls -A "$state_dir/sandboxes" 2>/dev/null)" ]; then
            die "sandboxes live in $state_dir/sandboxes ($(ls "$state_dir/sandboxes" | tr '\n' ' ')): remove them first with \`proximity sandbox destroy NAME\`"
        fi
    fi
    if [ -n "$use_systemctl" ]; then
        say "stopping proximity-api first: the service heals the network that \`proximity down\` removes"
        run systemctl stop proximity-api.service || true  # not loaded: nothing to stop
    fi
    network_down
    if [ -n "$use_systemctl" ]; then
        local units=(proximity-api.service)
        [ -n "$keep_network" ] || units+=(proximity-dns.service)
        run systemctl disable --now "${units[@]}" || true  # not loaded: nothing to stop
    fi
    remove "$api_unit"
    if [ -n "$keep_network" ]; then
        remove "$etc_dir/api-token"
    else
        remove "$dns_unit"
        if [ -n "$keep_config" ] && [ -f "$etc_dir/proximity.toml" ]; then
            for path in "$etc_dir"/* "$etc_dir"/.[!.]*; do
                [ "$path" = "$etc_dir/proximity.toml" ] || remove "$path"
            done
            say "--keep-config: kept $etc_dir/proximity.toml"
        else
            remove "$etc_dir"
        fi
        remove_state
        remove "$run_dir"
    fi
    [ -n "$use_systemctl" ] && run systemctl daemon-reload
    if [ -e "$command" ] && ! grep -qF "$marker" "$command"; then
        say "leaving $command: it is not Proximity's wrapper"
    else
        remove "$command"
    fi
    if [ -f "$record" ]; then
        remove "$prefix"
    elif [ -e "$prefix" ]; then
        say "leaving $prefix: it has no $record, so it is not a Proximity install"
    fi
    say "the Debian packages (${packages[*]}) stay: other software may use them"
}

if [ -n "$dry_run" ]; then say "dry run: nothing is changed"; fi
if [ "$action" = install ]; then
    install_packages
    install_venv
    install_command
    install_api_unit
    say "done: \`proximity --help\`; remove with: scripts/install.sh --uninstall"
else
    uninstall
    say "done"
fi
