#!/usr/bin/env bash
# Build dist/proximity_<version>~debN_<arch>.deb for one Debian release (make deb DIST=bookworm|trixie).
#
# The package carries its own Python environment in /usr/lib/proximity: the pinned, hashed
# dependencies of requirements.lock as wheels for that release's /usr/bin/python3 (compiled
# wheels differ per Python version), so the host needs no package index for pip. The
# proximity-api unit is rendered by Proximity itself (render.api_unit) with the packaged paths.
# Built with dpkg-deb as root:root files; needs python3 with pip (the repository's .venv) and dpkg-deb.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
here=$repo/packaging
dist=${1:?usage: packaging/build-deb.sh bookworm|trixie}
python=${PYTHON:-$repo/.venv/bin/python}

# Per release: its Python (compiled wheels differ per minor version), its glibc (the newest
# manylinux wheels it runs), the version suffix, and where its units live.
case $dist in
    bookworm) py=3.11 glibc=36 suffix=deb12 unitdir=lib/systemd/system ;;     # Debian 12, Proxmox VE 8
    trixie) py=3.13 glibc=41 suffix=deb13 unitdir=usr/lib/systemd/system ;;   # Debian 13, Proxmox VE 9
    *) echo "build-deb: unknown DIST '$dist': use bookworm (Debian 12, Proxmox VE 8) or trixie (Debian 13, Proxmox VE 9)" >&2; exit 2 ;;
esac
arch=${ARCH:-$(dpkg --print-architecture)}
case $arch in
    amd64) machine=x86_64 ;;
    arm64) machine=aarch64 ;;
    *) echo "build-deb: no wheels for architecture '$arch': use amd64 or arm64" >&2; exit 2 ;;
esac
upstream=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")
version=$upstream~$suffix
deb=$repo/dist/proximity_${version}_$arch.deb
build=$repo/build/deb/$dist
root=$build/root
lib=usr/lib/proximity
site=$lib/lib/python$py/site-packages
echo "build-deb: $deb (Python $py, $arch)"

rm -rf "$build" && mkdir -p "$root/DEBIAN" "$root/$site" "$root/$lib/bin" "$root/usr/bin" "$root/$unitdir" \
    "$root/usr/share/doc/proximity" "$repo/dist"
umask 022

# -- the Python environment ----------------------------------------------------------------
# A virtual environment made by hand for the target Python (it need not run here): pyvenv.cfg,
# bin/python3 -> /usr/bin/python3, and lib/pythonX.Y/site-packages.
printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\n' "$py" >"$root/$lib/pyvenv.cfg"
ln -s ../../../bin/python3 "$root/$lib/bin/python3"
ln -s python3 "$root/$lib/bin/python"

# Wheels only, for that Python and glibc, each checked against its hash in requirements.lock;
# setuptools (only the build backend) is left out. pip before 23.3 does not widen a manylinux
# tag to the older ones, so every glibc up to the release's is named.
platforms=(--platform "manylinux2014_$machine" --platform "manylinux2010_$machine" --platform "manylinux1_$machine")
for minor in $(seq 5 "$glibc"); do platforms+=(--platform "manylinux_2_${minor}_$machine"); done
"$python" - "$repo/requirements.lock" "$build/requirements.lock" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.split(r"\n(?=\S)", text)  # a requirement and its hash/comment lines
open(sys.argv[2], "w").write("\n".join(b for b in blocks if not b.startswith("setuptools==")) + "\n")
PY
pip=("$python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --no-compile --no-deps --target "$root/$site" --require-hashes \
    --only-binary=:all: --implementation cp --python-version "$py" "${platforms[@]}" -r "$build/requirements.lock"
rm -rf "$root/$site/bin"
# Proximity itself: a pure-Python wheel built from this checkout (its metadata gives --version).
"${pip[@]}" wheel --quiet --no-deps --no-build-isolation --wheel-dir "$build/wheel" "$repo"
"${pip[@]}" install --quiet --no-compile --no-deps --target "$root/$site" --python-version "$py" \
    --only-binary=:all: "$build/wheel"/proximity-*.whl
rm -rf "$root/$site/bin"  # console scripts that name this machine's Python; /usr/bin/proximity replaces them
find "$root/$site" -name '__pycache__' -prune -exec rm -rf {} +
# As dh_strip does (the debug symbols are not shipped); then modes as the files are used.
find "$root/$site" -name '*.so' -type f -exec strip --strip-unneeded --remove-section=.comment --remove-section=.note {} +
find "$root/$site" -type f -perm /111 ! -name '*.so' ! -name '*.so.*' -exec chmod a-x {} +
chmod 0755 "$root/$site"/proximity/data/*.sh "$root/$site"/proximity/data/*.script
# Modules that start with a `#!python` line name the release's interpreter, as Debian's own do.
grep -rlZE --include='*.py' '\`#! *(/usr/bin/env +)?python[0-9.]*( |$)' "$root/$site" |
    xargs -0r sed -i -E '1s|^#! *(/usr/bin/env +)?python[0-9.]*|#!/usr/bin/python3|'

# -- the command and the unit --------------------------------------------------------------
cat >"$root/usr/bin/proximity" <<'SH'
#!/bin/sh
# Proximity from its own environment (the Debian package); -I: no PYTHON* variables, no user site.
exec /usr/lib/proximity/bin/python3 -I -m proximity "$@"
SH
chmod 0755 "$root/usr/bin/proximity"
# The unit exactly as Proximity renders it, for the default settings and the packaged command.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH="$repo/src" "$python" -I -c 'import sys
sys.path.insert(0, sys.argv[1])
from proximity.network import render
from proximity.settings import validate
sys.stdout.write(render.api_unit(validate({}), "/usr/bin/proximity", "127.0.0.1", 8080))' "$repo/src" \
    >"$root/$unitdir/proximity-api.service"

# -- docs, control, maintainer scripts -----------------------------------------------------
doc=$root/usr/share/doc/proximity
mkdir -p "$root/usr/share/man/man1"
gzip -9n <"$here/debian/proximity.1" >"$root/usr/share/man/man1/proximity.1.gz"
"$python" "$here/copyright.py" "$root/$site" "$site" >"$doc/copyright"
sed "s/@VERSION@/$version/; s/@DATE@/$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}")/" \
    "$here/debian/changelog.in" | gzip -9n >"$doc/changelog.gz"  # a native package
for script in preinst postinst prerm postrm; do
    install -m 0755 "$here/debian/$script" "$root/DEBIAN/$script"
done
# libc: the newest glibc any bundled wheel was built for.
libc=$("$python" - "$root/$site" <<'PY'
import pathlib, re, sys
versions = [(2, 5)]
for wheel in pathlib.Path(sys.argv[1]).glob("*.dist-info/WHEEL"):
    for tag in re.findall(r"^Tag: .*$", wheel.read_text(), re.M):
        versions += [(2, int(m)) for m in re.findall(r"manylinux_2_(\d+)", tag)]
        versions += [(2, 17)] * ("manylinux2014" in tag) + [(2, 12)] * ("manylinux2010" in tag)
print("%d.%d" % max(versions))
PY
)
# What Proximity drives on the host: the bridge (ifupdown2, iproute2), DHCP and DNS (dnsmasq),
# the probe's DHCP client (busybox udhcpc) and dhcp_release (dnsmasq-utils), the firewall (nftables: the
# table inet proximity; iptables: the accepts a Docker FORWARD drop needs, and removing an old release's
# rules). Not lxc: it conflicts with Proxmox's lxc-pve.
depends="ifupdown2, dnsmasq-base, dnsmasq-utils, busybox, iproute2, nftables, iptables"
next_py=${py%.*}.$((${py#*.} + 1))
size=$(du -sk --apparent-size "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@PY@/$py/" \
    -e "s/@NEXT_PY@/$next_py/" -e "s/@LIBC@/$libc/" -e "s/@DEPENDS@/$depends/" "$here/debian/control.in" >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
find "$root" -type d -exec chmod 0755 {} +
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "build-deb: built $deb ($(du -h "$deb" | cut -f1))"
