# Inherit in the installer image (isar-image-installer or yours), or set
# INHERIT += "bootline-installer" in local.conf: the image then runs the bootline agent
# instead of Isar's target-bootstrapper, with the settings it already has.
#
# Read (all optional; Isar's own names keep their meaning):
#   TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES, TARGET_BOOTSTRAPPER_TASK_<name>[script|workdir|effort]
#     (and bootline's flags args, timeout, retries, optional, rerun)
#   INSTALLER_UNATTENDED, INSTALLER_TARGET_DEVICE, INSTALLER_TARGET_OVERWRITE,
#   INSTALLER_UNATTENDED_ABORT_ENABLE, INSTALLER_UNATTENDED_ABORT_TIMEOUT
#   BOOTLINE_SERVER, BOOTLINE_TOKEN, BOOTLINE_SERVER_CA   the line's server (its plan is merged in)
#   BOOTLINE_REPORTERS   e.g. "console psplash http=https://mes.example/bootline/events"
#   BOOTLINE_IMAGE       the image deploy-image writes (default: installer.image.uri= on the kernel command line)
#   BOOTLINE_INVENTORY   "1": add collect-inventory, writing to /install/device-infos like device-info-collector
#   BOOTLINE_ON_SUCCESS  reboot, poweroff or none
#
# The generated /etc/bootline/config.yaml is packaged by bootline-config; the kernel
# command line (installer.*, bootline.*) still overrules it at run time, as in Isar.

BOOTLINE_SERVER ??= ""
BOOTLINE_TOKEN ??= ""
BOOTLINE_SERVER_CA ??= ""
BOOTLINE_REPORTERS ??= "console psplash"
BOOTLINE_IMAGE ??= ""
BOOTLINE_INVENTORY ??= "0"
BOOTLINE_ON_SUCCESS ??= ""

BOOTLINE_SETTINGS_VARS = "TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES INSTALLER_UNATTENDED INSTALLER_TARGET_DEVICE \
    INSTALLER_TARGET_OVERWRITE INSTALLER_UNATTENDED_ABORT_ENABLE INSTALLER_UNATTENDED_ABORT_TIMEOUT \
    BOOTLINE_SERVER BOOTLINE_TOKEN BOOTLINE_SERVER_CA BOOTLINE_REPORTERS BOOTLINE_IMAGE BOOTLINE_INVENTORY BOOTLINE_ON_SUCCESS"

def bootline_settings(d):
    """The datastore's values, in the shape lib/bootline_isar/config.py takes."""
    variables = {}
    for name in d.getVar('BOOTLINE_SETTINGS_VARS').split():
        value = d.getVar(name)
        if value is not None:
            variables[name] = value
    flags = {}
    for task in (d.getVar('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES') or '').split():
        var = 'TARGET_BOOTSTRAPPER_TASK_%s' % task
        flags[var] = {k: str(v) for k, v in (d.getVarFlags(var) or {}).items() if not k.startswith('_')}
    return variables, flags

def bootline_config_text(d):
    from bootline_isar.config import bootline_config_text as generate, SettingsError
    variables, flags = bootline_settings(d)
    try:
        return generate(variables, flags)
    except SettingsError as e:
        bb.fatal('meta-bootline: %s' % e)

# The installer image (the one that installs target-bootstrapper-service) gets the agent
# in its place; other images (the product image of the same build) are left alone.
python __anonymous () {
    packages = (d.getVar('IMAGE_INSTALL') or '').split()
    if 'target-bootstrapper-service' in packages:
        packages = [p for p in packages if p != 'target-bootstrapper-service'] + ['bootline-agent', 'bootline-config']
        d.setVar('IMAGE_INSTALL', ' '.join(packages))
}
