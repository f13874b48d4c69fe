# The bootline agent as Debian package: the .deb `npm run package:deb` builds
# (bootline-agent_<version>_all.deb), put into files/ or fetched from a release URL.
# Isar installs prebuilt .debs through its isar-apt repository (dpkg-prebuilt).
DESCRIPTION = "bootline agent: unattended device bootstrapping"
LICENSE = "MIT"

inherit dpkg-prebuilt

BOOTLINE_DEB ?= "bootline-agent_${PV}_all.deb"
SRC_URI = "file://${BOOTLINE_DEB}"
