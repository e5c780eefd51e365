"""Write debian/copyright (machine-readable format 1.0) for Proximity and the wheels it bundles.

Each bundled distribution is named with its version and the license its own metadata states;
its full license text ships inside its .dist-info directory in /usr/lib/proximity.
"""

import email.parser
import pathlib
import sys

site, prefix = pathlib.Path(sys.argv[1]), sys.argv[2]  # the site-packages directory; its path in the package
print("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
print("Upstream-Name: proximity")
print("Comment: Proximity bundles the Python distributions listed below, at the versions pinned")
print(" in its requirements.lock, in /usr/lib/proximity. Each one's license text is in its")
print(" .dist-info directory there.")
print()
print("Files: *")
print("Copyright: Proximity developers")
print("License: unspecified")
print(" Proximity's repository states no license yet.")
for dist in sorted(site.glob("*.dist-info")):
    meta = email.parser.Parser().parsestr((dist / "METADATA").read_text(errors="replace"), headersonly=True)
    name, version = meta["Name"], meta["Version"]
    if name.lower() == "proximity":
        continue
    license_name = (meta.get("License-Expression") or "").strip()
    if not license_name:
        license_name = (meta.get("License") or "").strip().splitlines()[0:1]
        license_name = license_name[0][:60] if license_name and len(license_name[0]) < 60 else ""
    if not license_name:
        classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
        license_name = classifiers[0] if classifiers else "see-dist-info"
    print()
    print(f"Files: {prefix}/{dist.name.split('-')[0]}*")
    print(f"Copyright: the authors of {name} {version}")
    print(f"License: {license_name.replace(' ', '-')}")
    print(f" The license text is in {prefix}/{dist.name}.")
