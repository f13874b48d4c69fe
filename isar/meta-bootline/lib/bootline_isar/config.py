# The bootline agent's configuration from an Isar build's settings: the
# target-bootstrapper's TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES and
# TARGET_BOOTSTRAPPER_TASK_<name>[script|workdir|effort|...], the unattended
# installer's INSTALLER_* variables, and meta-bootline's BOOTLINE_* variables.
#
# Pure: settings in, JSON text out (JSON is YAML, the agent reads it as
# /etc/bootline/config.yaml). The bbclass calls it with the datastore's values; the
# tests call it with sample settings and load the result with the agent's own loader.
#
#   python3 config.py SETTINGS.json   # {"vars": {NAME: value}, "flags": {NAME: {flag: value}}}
import json
import re
import sys

DEPLOY_IMAGE = 'deploy-image'
ISAR_DEPLOY_SCRIPT = 'deploy-image-wic.sh'
TASK_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
BOOLEAN = {'1': True, 'true': True, 'yes': True, 'on': True, '0': False, 'false': False, 'no': False, 'off': False, '': False}
REPORTER_TYPES = ('console', 'psplash', 'led', 'json', 'http', 'command')


class SettingsError(Exception):
    """A setting bootline cannot use: the message names the variable and what to write."""


def _bool(name, value):
    v = str(value).strip().lower()
    if v not in BOOLEAN:
        raise SettingsError('%s = "%s": expected 1/0, true/false, yes/no' % (name, value))
    return BOOLEAN[v]


def _positive(name, value):
    try:
        n = float(value)
    except ValueError:
        n = -1
    if n <= 0:
        raise SettingsError('%s = "%s": expected a positive number' % (name, value))
    return int(n) if n == int(n) else n


def _task(name, flags):
    """One TARGET_BOOTSTRAPPER_TASK_<name> as an agent task (the same mapping as the agent's own Isar reader)."""
    var = 'TARGET_BOOTSTRAPPER_TASK_%s' % name
    script = (flags.get('script') or '').strip()
    if name == DEPLOY_IMAGE and script in ('', ISAR_DEPLOY_SCRIPT):
        # Isar's deploy-image-wic.sh becomes the agent's built-in deploy-image; its [workdir]
        # only said where that script was installed.
        task = {'name': name, 'builtin': DEPLOY_IMAGE}
    elif not script:
        raise SettingsError('%s[script] is not set: give the script the task runs (e.g. %s[script] = "%s.sh")' % (var, var, name))
    else:
        task = {'name': name, 'script': script, 'workdir': (flags.get('workdir') or '.').strip()}
    if flags.get('effort', '').strip():
        task['effort'] = _positive('%s[effort]' % var, flags['effort'])
    if flags.get('args', '').strip():
        task['args'] = flags['args'].split()
    if flags.get('timeout', '').strip():
        task['timeout'] = _positive('%s[timeout]' % var, flags['timeout'])
    if flags.get('retries', '').strip():
        if not flags['retries'].strip().isdigit():
            raise SettingsError('%s[retries] = "%s": expected a whole number, 0 or more' % (var, flags['retries']))
        task['retries'] = int(flags['retries'])
    if flags.get('optional', '').strip():
        task['optional'] = _bool('%s[optional]' % var, flags['optional'])
    if flags.get('rerun', '').strip():
        if flags['rerun'].strip() not in ('if-unfinished', 'always'):
            raise SettingsError('%s[rerun] = "%s": expected if-unfinished or always' % (var, flags['rerun']))
        task['rerun'] = flags['rerun'].strip()
    return task


def _reporters(value):
    """BOOTLINE_REPORTERS: words `type` or `type=argument` (http=URL, json=PATH, command=SHELL-WORDLESS, console=TTY,TTY)."""
    out = []
    for word in value.split():
        kind, _, arg = word.partition('=')
        if kind not in REPORTER_TYPES:
            raise SettingsError('BOOTLINE_REPORTERS: unknown reporter "%s": use %s' % (kind, ', '.join(REPORTER_TYPES)))
        r = {'type': kind}
        if kind == 'http':
            if not arg:
                raise SettingsError('BOOTLINE_REPORTERS: http needs its URL: http=https://mes.example/events')
            r['url'] = arg
        elif kind == 'json':
            r['path'] = arg or '/var/log/bootline-events.ndjson'
        elif kind == 'command':
            if not arg:
                raise SettingsError('BOOTLINE_REPORTERS: command needs a program: command=/usr/bin/notify-mes')
            r['command'] = arg
        elif kind == 'console' and arg:
            r['ttys'] = arg.split(',')
        out.append(r)
    return out


def bootline_config(variables, flags):
    """variables: NAME -> value (unset ones absent); flags: NAME -> {flag: value}. Returns the config as a dict."""
    get = lambda n: (variables.get(n) or '').strip()
    config = {}
    names = get('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES').split()
    tasks = []
    for name in names:
        if not TASK_NAME.match(name):
            raise SettingsError('TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES: "%s" is not a usable task name (letters, digits, ".", "_", "-")' % name)
        if name in [t['name'] for t in tasks]:
            continue
        tasks.append(_task(name, flags.get('TARGET_BOOTSTRAPPER_TASK_%s' % name, {})))

    deploy = next((t for t in tasks if t.get('builtin') == DEPLOY_IMAGE), None)
    if get('INSTALLER_UNATTENDED'):
        config['unattended'] = _bool('INSTALLER_UNATTENDED', get('INSTALLER_UNATTENDED'))
    if get('INSTALLER_UNATTENDED_ABORT_ENABLE'):
        config.setdefault('abort', {})['enable'] = _bool('INSTALLER_UNATTENDED_ABORT_ENABLE', get('INSTALLER_UNATTENDED_ABORT_ENABLE'))
    if get('INSTALLER_UNATTENDED_ABORT_TIMEOUT'):
        try:
            config.setdefault('abort', {})['timeout'] = float(get('INSTALLER_UNATTENDED_ABORT_TIMEOUT'))
        except ValueError:
            raise SettingsError('INSTALLER_UNATTENDED_ABORT_TIMEOUT = "%s": expected seconds' % get('INSTALLER_UNATTENDED_ABORT_TIMEOUT'))
    if deploy is not None:
        w = deploy.setdefault('with', {})
        if get('INSTALLER_TARGET_DEVICE'):
            # Isar's installer.target.dev: candidates separated by "," or ":".
            w['target'] = [t for t in re.split(r'[,:]', get('INSTALLER_TARGET_DEVICE')) if t]
        if get('INSTALLER_TARGET_OVERWRITE'):
            if get('INSTALLER_TARGET_OVERWRITE') not in ('OVERWRITE', 'ABORT'):
                raise SettingsError('INSTALLER_TARGET_OVERWRITE = "%s": expected OVERWRITE or ABORT' % get('INSTALLER_TARGET_OVERWRITE'))
            w['overwrite'] = get('INSTALLER_TARGET_OVERWRITE')
        if get('BOOTLINE_IMAGE'):
            w['image'] = get('BOOTLINE_IMAGE')
        if not w:
            del deploy['with']
    if get('BOOTLINE_INVENTORY') and _bool('BOOTLINE_INVENTORY', get('BOOTLINE_INVENTORY')) and 'collect-inventory' not in [t['name'] for t in tasks]:
        tasks.append({'name': 'collect-inventory', 'builtin': 'collect-inventory', 'with': {'installMedium': '/install'}})
    config['tasks'] = tasks

    for var, key in (('BOOTLINE_SERVER', 'server'), ('BOOTLINE_TOKEN', 'token'), ('BOOTLINE_SERVER_CA', 'serverCa')):
        if get(var):
            config[key] = get(var)
    if get('BOOTLINE_REPORTERS'):
        config['reporters'] = _reporters(get('BOOTLINE_REPORTERS'))
    if get('BOOTLINE_ON_SUCCESS'):
        if get('BOOTLINE_ON_SUCCESS') not in ('reboot', 'poweroff', 'none', 'shell'):
            raise SettingsError('BOOTLINE_ON_SUCCESS = "%s": expected reboot, poweroff or none' % get('BOOTLINE_ON_SUCCESS'))
        config['onSuccess'] = {'action': get('BOOTLINE_ON_SUCCESS')}
    return config


def bootline_config_text(variables, flags):
    return json.dumps(bootline_config(variables, flags), indent=2) + '\n'


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.stderr.write('usage: config.py SETTINGS.json\n')
        sys.exit(2)
    with open(sys.argv[1]) as f:
        s = json.load(f)
    try:
        sys.stdout.write(bootline_config_text(s.get('vars', {}), s.get('flags', {})))
    except SettingsError as e:
        sys.stderr.write('bootline: %s\n' % e)
        sys.exit(1)
