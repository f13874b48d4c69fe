# /etc/bootline/config.yaml for the installer, generated from the image's settings by
# classes/bootline-installer.bbclass (lib/bootline_isar/config.py). A conffile of its own
# package, so that bootline-agent's default config is replaced cleanly.
DESCRIPTION = "bootline agent configuration from the Isar installer settings"
LICENSE = "MIT"
MAINTAINER = "bootline developers <bootline@lists.example.org>"

inherit dpkg-raw
inherit bootline-installer

DEBIAN_DEPENDS = "bootline-agent"
# Rebuild when a setting changes.
do_install[vardeps] += "${BOOTLINE_SETTINGS_VARS}"

python do_install:append() {
    import os
    text = bootline_config_text(d)
    dest = os.path.join(d.getVar('D'), 'etc', 'bootline')
    os.makedirs(dest, exist_ok=True)
    # bootline-agent owns /etc/bootline/config.yaml: this package adds its own file and a
    # unit drop-in that points the agent at it.
    with open(os.path.join(dest, 'isar.yaml'), 'w') as f:
        f.write(text)
    dropin = os.path.join(d.getVar('D'), 'usr', 'lib', 'systemd', 'system', 'bootline.service.d')
    os.makedirs(dropin, exist_ok=True)
    with open(os.path.join(dropin, 'isar.conf'), 'w') as f:
        f.write('[Service]\nExecStart=\nExecStart=/usr/bin/node /usr/lib/bootline/bootline.mjs run --config /etc/bootline/isar.yaml --state-dir /var/lib/bootline\n')
}
