// The options every launcher of the agent bundle gives node (the installer's /usr/bin/bootline,
// the Debian package's and its systemd unit, `lab sim`'s agents, the image benchmark).
//
// 1 MiB semi-spaces instead of 16: V8 grows its young generation as a process allocates, and
// the agent keeps little garbage (its image buffers are reused, outside the heap). Measured: an
// agent's peak anonymous memory 42 → 33 MiB (docs/reliability.md); `image copy` of the
// benchmark's 2 GiB .xz over HTTP, node's peak RSS 150 → 134 MB at the same speed (21.9 and
// 21.3 s); its .zst and .gz copies to tmpfs took as long either way (4.5-4.7 and 7.2-7.7 s).
export const AGENT_NODE_OPTIONS: readonly string[] = ['--max-semi-space-size=1'];
